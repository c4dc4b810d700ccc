// Which distribution an ISO holds, from what is on it, and what its initramfs
// must be told on the kernel command line to find the ISO file again after
// kexec, when nothing is mounted any more. Pure.
import { StiefelError } from '../errors';

export type IsoDistroId = 'debian-live' | 'debian-installer' | 'ubuntu-casper' | 'arch' | 'fedora-live' | 'unknown';

export interface IsoDistroRule {
  id: IsoDistroId;
  name: string;
  /** The software in the ISO's initramfs that looks for the ISO. */
  finder: string;
  /** Directories or files whose presence says it. */
  paths: readonly string[];
  /** Command-line words (a prefix before '=' or the whole word) that say it. */
  cmdline: readonly RegExp[];
  /** Volume labels that say it. */
  label: RegExp | null;
  /** The parameters to add; PATH is the ISO file's path on its file system, DEVICE that file system's device. */
  parameters: readonly string[];
}

/**
 * The table, most specific first (a Debian live ISO carries the installer
 * too, so live wins over installer). It is also the README's table.
 */
export const ISO_DISTROS: readonly IsoDistroRule[] = [
  {
    id: 'debian-live',
    name: 'Debian live',
    finder: 'live-boot',
    paths: ['/live'],
    cmdline: [/^boot=live$/],
    label: null,
    parameters: ['findiso=PATH'],
  },
  {
    id: 'ubuntu-casper',
    name: 'Ubuntu live (casper)',
    finder: 'casper',
    paths: ['/casper'],
    cmdline: [/^boot=casper$/],
    label: null,
    parameters: ['iso-scan/filename=PATH'],
  },
  {
    id: 'arch',
    name: 'Arch Linux (archiso)',
    finder: 'archiso',
    paths: ['/arch/boot'],
    cmdline: [/^archisobasedir=/, /^archisolabel=/, /^archisosearchuuid=/],
    label: /^ARCH_\d+/,
    parameters: ['img_dev=DEVICE', 'img_loop=PATH'],
  },
  {
    id: 'fedora-live',
    name: 'Fedora live (dracut dmsquash-live)',
    finder: 'dracut',
    paths: ['/LiveOS/squashfs.img'],
    cmdline: [/^rd\.live\.image$/, /^root=live:/],
    label: null,
    parameters: ['iso-scan/filename=PATH', 'rd.live.image'],
  },
  {
    id: 'debian-installer',
    name: 'Debian installer',
    finder: 'debian-installer (loads whole into RAM)',
    // Netboot mini.iso has neither: only its kernel, initrd and /.disk/info
    // (which live and casper ISOs have too; their rules come first).
    paths: ['/install.amd', '/install.386', '/install.a64', '/install', '/.disk/info'],
    cmdline: [],
    label: null,
    parameters: [],
  },
];

/** What distribution recognition looks at. */
export interface IsoFacts {
  label: string;
  /** Which of the rules' paths exist on the ISO. */
  existing: ReadonlySet<string>;
  /** The command lines of the boot entries. */
  cmdlines: readonly string[];
  /** /.disk/info (Debian and Ubuntu): one line naming the release. */
  diskInfo: string | null;
}

export interface IsoDistro {
  id: IsoDistroId;
  name: string;
  /** Why: the path, command-line word or label that said so. */
  evidence: string[];
  /** /.disk/info, when there is one. */
  info: string | null;
}

/** Every path any rule looks for, for the caller to look up on the ISO. */
export const DISTRO_PATHS: readonly string[] = ISO_DISTROS.flatMap((r) => r.paths);

function evidenceFor(rule: IsoDistroRule, facts: IsoFacts): string[] {
  const out: string[] = [];
  for (const p of rule.paths) if (facts.existing.has(p)) out.push(p);
  const words = new Set(facts.cmdlines.flatMap((c) => c.split(/\s+/)));
  for (const re of rule.cmdline) {
    const w = [...words].find((x) => re.test(x));
    if (w) out.push(w);
  }
  if (rule.label?.test(facts.label)) out.push(`label ${facts.label}`);
  return out;
}

export function recognizeDistro(facts: IsoFacts): IsoDistro {
  for (const rule of ISO_DISTROS) {
    const evidence = evidenceFor(rule, facts);
    // A Debian installer's /.disk/info says "Debian"; Ubuntu's installers have no /install.amd.
    if (evidence.length > 0) return { id: rule.id, name: rule.name, evidence, info: facts.diskInfo };
  }
  return { id: 'unknown', name: 'unknown', evidence: [], info: facts.diskInfo };
}

/** The family of one boot entry, from its kernel path and command line; `fallback` (the ISO's) when neither says. */
export function entryDistro(kernel: string, cmdline: string, fallback: IsoDistroId): IsoDistroId {
  const facts: IsoFacts = { label: '', existing: new Set(), cmdlines: [cmdline], diskInfo: null };
  for (const rule of ISO_DISTROS) {
    if (evidenceFor(rule, facts).length > 0 || rule.paths.some((p) => kernel.startsWith(`${p}/`))) return rule.id;
  }
  return fallback;
}

export function distroRule(id: IsoDistroId): IsoDistroRule | null {
  return ISO_DISTROS.find((r) => r.id === id) ?? null;
}

/** The rule of a live system, whose initramfs looks for the ISO again once its kernel runs; null for what loads whole into RAM. */
export function liveRule(id: IsoDistroId): IsoDistroRule | null {
  const rule = distroRule(id);
  return rule && rule.parameters.length > 0 ? rule : null;
}

/**
 * The kernel parameters that make `distro`'s initramfs find the ISO at
 * `isoPath` (a path on a file system its initramfs mounts) after kexec;
 * archiso also needs that file system's device (`options.device`, e.g.
 * /dev/disk/by-uuid/...). Empty for images that need nothing (installers that
 * run from RAM) and for unknown distributions.
 */
export function isoBootParameters(distro: IsoDistroId, isoPath: string, options: { device?: string } = {}): string[] {
  if (!isoPath.startsWith('/') || /\s/.test(isoPath)) throw new StiefelError('E_ISO_PATH', `the ISO's path must be absolute and without blanks, not ${JSON.stringify(isoPath)}`);
  const rule = distroRule(distro);
  if (!rule) return [];
  return rule.parameters.map((p) => {
    if (p.includes('DEVICE')) {
      if (!options.device) throw new StiefelError('E_ISO_DEVICE', `${rule.name} needs the device holding the ISO file (${p}): pass it`);
      return p.replace('DEVICE', options.device);
    }
    return p.replace('PATH', isoPath);
  });
}

/**
 * `cmdline` with `parameters` in place of the same keys it has already (a
 * grub loopback entry's `findiso=${iso_path}` expands to an empty `findiso=`),
 * the rest kept in order.
 */
export function withIsoParameters(cmdline: string, parameters: readonly string[]): string {
  const keyOf = (w: string) => (w.includes('=') ? w.slice(0, w.indexOf('=') + 1) : w);
  const keys = new Set(parameters.map(keyOf));
  return [...cmdline.split(/\s+/).filter((w) => w !== '' && !keys.has(keyOf(w))), ...parameters].join(' ');
}
