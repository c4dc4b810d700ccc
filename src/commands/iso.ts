import { resolve } from 'node:path';
import { HelpRequested, parseCommandArgs, type Command, type CommandContext } from '../cli/command';
import { runIsoBoot, runningConsoles } from '../desktop/iso-source';
import { ISO_KEYRING } from '../image/build';
import { UsageError } from '../errors';
import { distroRule } from '../iso/distro';
import { openIsoFile } from '../iso/file-source';
import { inspectIso, requireEntries, type IsoBootImage, type IsoInspection } from '../iso/inspect';

const HELP = `Usage: stiefelctl iso inspect FILE [--json]
       stiefelctl iso boot URL|FILE [--sha256 HEX | --sums URL|FILE [--keyring FILE]]
                           [--entry N] [--no-kexec --out DIR]

inspect: reads an ISO 9660 image (a file or a block device; nothing is
mounted, nothing written) and prints what it boots: the volume label, the
distribution it recognises and the kernel parameters that distribution's
initramfs needs to find the ISO file after kexec, the El Torito boot images
(BIOS, UEFI), and every entry of its boot menus (isolinux/syslinux and GRUB)
with kernel, initrds, command line and whether those files are on the ISO.

boot: downloads (or opens) an ISO, checks it and kexecs one of its entries
(in stiefelOS: the desktop's stick). A URL needs a network: without a
default route, DHCP runs on every link (busybox udhcpc). https: is checked
against Node's bundled CA roots; http: only with --sha256 or --sums. The download
resumes after a dropped connection, stays in RAM (a tmpfs) and must fit in
it; its SHA-256 is checked before anything boots. ISOs that load whole
into RAM (installers, Debian's netboot mini.iso) boot from a URL or a file.
Live systems, whose initramfs looks for the ISO again after the kernel
starts (Debian live, Ubuntu, Arch, Fedora): from a file on a disk, their
initramfs is told its path there (findiso=, iso-scan/filename=, img_dev=
img_loop=); by URL in stiefelOS, the menu is read over HTTP ranges first,
stiefelOS restarts from its stick with RAM set aside (memmap=), downloads
the ISO into it (/dev/pmem0) and kexecs the ISO's kernel with the same
memmap= and the pmem modules from the ISO's own live system.

Options:
  --json       inspect: print one JSON object on stdout (its fields are listed
               in the README, "Distribution ISOs"); skipped entries are in it
               too instead of on stderr
  --sha256 HEX boot: the ISO's SHA-256 (required for http:, unless --sums)
  --sums URL   boot: the distribution's SHA256SUMS (a URL or a file); its
               detached signature (SHA256SUMS.sign, .gpg or .asc beside it),
               or the signature inside a clear-signed list (Fedora's
               CHECKSUM), is checked with gpgv against the keyring first,
               then the ISO must have the SHA-256 it lists for its file name
  --keyring F  boot: the public keys that may sign --sums (gpg --export KEY > F;
               default ${ISO_KEYRING}, which stiefelOS carries when the
               laptop has it)
  --entry N    boot: the entry to boot, numbered as inspect lists them
               (default: the menu's default)
  --no-kexec   boot: do not kexec; needs --out
  --out DIR    boot: write vmlinuz, initrd.img and cmdline to DIR

Exit status: 0 when the ISO has at least one Linux boot entry; 1 when FILE is
not an ISO, is damaged or truncated, or has no usable boot menu (one line on
stderr says which); 2 for usage.

Examples:
  stiefelctl iso inspect debian-live-12.5.0-amd64-standard.iso
  stiefelctl iso inspect /dev/sr0 --json
  stiefelctl iso boot https://deb.debian.org/debian/dists/bookworm/main/installer-amd64/current/images/netboot/mini.iso
  stiefelctl iso boot /media/usb/mini.iso --entry 2
  stiefelctl iso boot https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-12.8.0-amd64-netinst.iso \
    --sums https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/SHA256SUMS --keyring debian-cd.gpg
`;

const KIB = 1024;
const WIDTH = 80;

function bytes(n: number): string {
  if (n < KIB) return `${n} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / KIB;
  let u = 0;
  while (v >= KIB && u < units.length - 1) {
    v /= KIB;
    u++;
  }
  return `${v >= 100 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/** Words of `text` in lines of at most WIDTH columns, the first after `head`, the rest indented as far. */
function wrap(head: string, text: string): string[] {
  const indent = ' '.repeat(head.length);
  const lines: string[] = [];
  let line = head;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = indent + word;
    } else {
      line += (empty ? '' : ' ') + word;
    }
    empty = false;
  }
  lines.push(line);
  return lines;
}

const PLATFORM_NAMES: Record<string, string> = { bios: 'BIOS', uefi: 'UEFI', powerpc: 'PowerPC', mac: 'Mac', other: 'other' };
const NAMES_WORDS = { 'rock-ridge': 'Rock Ridge names', joliet: 'Joliet names', iso9660: 'ISO 9660 names only' } as const;

function bootImageLine(b: IsoBootImage): string {
  const where = b.path ?? 'an image outside the file tree';
  const emulation = b.emulation === 'none' ? 'no emulation' : `${b.emulation} emulation`;
  return `${PLATFORM_NAMES[b.platform]}${b.platform === 'other' ? ` 0x${b.platformId.toString(16)}` : ''}, ${emulation}${b.bootable ? '' : ', not bootable'}: ${where} (${bytes(b.size)} at block ${b.loadBlock})`;
}

export function formatInspection(r: IsoInspection): string {
  const out: string[] = [];
  const field = (name: string, text: string) => out.push(...wrap(`${name.padEnd(15)}`, text));
  field('ISO', `${r.file}, ${bytes(r.size)}, ${NAMES_WORDS[r.names]}`);
  field('label', r.volume.label || '(none)');
  const d = r.distro;
  field('distribution', d.id === 'unknown' ? 'not recognised' : `${d.name} (${d.id}), from ${d.evidence.join(', ')}`);
  if (d.info) field('', d.info);
  const rule = distroRule(d.id);
  field('finds the ISO', rule ? (rule.parameters.length ? `${rule.parameters.join(' ')} (${rule.finder})` : `needs nothing (${rule.finder})`) : 'not known for this distribution');
  if (r.bootImages.length === 0) field('El Torito', 'none (not bootable as a CD)');
  r.bootImages.forEach((b, i) => field(i === 0 ? 'El Torito' : '', bootImageLine(b)));
  field('menus', r.menus.length ? r.menus.map((m) => `${m.path} (${m.menu})`).join(', ') : 'none found');
  out.push('');
  out.push(r.entries.length ? 'Boot entries (* the default of its menu):' : 'No boot entries.');
  for (const e of r.entries) {
    const head = `${String(e.number).padStart(3)}${e.default ? '*' : ' '} `;
    const tag = `[${e.menu}]`;
    const title = e.title.length + head.length + tag.length + 1 > WIDTH ? `${e.title.slice(0, WIDTH - head.length - tag.length - 4)}...` : e.title;
    out.push(`${head}${title}${' '.repeat(Math.max(1, WIDTH - head.length - title.length - tag.length))}${tag}`);
    const missing = (exists: boolean) => (exists ? '' : ' (not on the ISO)');
    out.push(...wrap('     kernel  ', `${e.kernel}${missing(e.kernelExists)}`));
    for (const i of e.initrds) out.push(...wrap('     initrd  ', `${i.path}${missing(i.exists)}`));
    out.push(...wrap('     cmdline ', e.cmdline || '(empty)'));
  }
  return `${out.join('\n')}\n`;
}

/** The --json form: this shape is documented in the README; add fields, never rename them. */
export function inspectionJson(r: IsoInspection): unknown {
  return {
    file: r.file,
    size: r.size,
    label: r.volume.label,
    volume: {
      systemId: r.volume.systemId,
      publisherId: r.volume.publisherId,
      preparerId: r.volume.preparerId,
      applicationId: r.volume.applicationId,
      created: r.volume.created,
      modified: r.volume.modified,
      blockSize: r.volume.blockSize,
      blocks: r.volume.blocks,
    },
    names: r.names,
    distribution: { id: r.distro.id, name: r.distro.name, evidence: r.distro.evidence, info: r.distro.info, isoParameters: r.distro.parameters },
    bootImages: r.bootImages.map((b) => ({ platform: b.platform, platformId: b.platformId, bootable: b.bootable, emulation: b.emulation, loadBlock: b.loadBlock, sectorCount: b.sectorCount, path: b.path, size: b.size })),
    menus: r.menus,
    entries: r.entries.map((e) => ({
      number: e.number,
      menu: e.menu,
      config: e.config,
      id: e.id,
      title: e.title,
      default: e.default,
      kernel: e.kernel,
      kernelExists: e.kernelExists,
      initrds: e.initrds,
      cmdline: e.cmdline,
      distribution: e.distro,
      isoParameters: distroRule(e.distro)?.parameters ?? [],
    })),
    skipped: r.skipped,
  };
}

async function inspect(argv: string[], ctx: Parameters<Command['run']>[1]): Promise<number> {
  const { values, positionals } = parseCommandArgs('iso', argv, { json: { type: 'boolean' } }, { min: 1, max: 1, names: 'FILE (an ISO image file or a block device)' });
  const name = positionals[0]!;
  const source = await openIsoFile(resolve(ctx.cwd, name), name);
  let r: IsoInspection;
  try {
    r = await inspectIso(source);
  } finally {
    await source.close();
  }
  const log = ctx.log.child('iso');
  for (const n of r.notes) log.debug(n);
  if (r.entries.length === 0) {
    for (const s of r.skipped) ctx.log.info(`skipped [${s.menu}] ${s.what}: ${s.reason}`);
    requireEntries(r);
  }
  if (values.json) ctx.stdout(`${JSON.stringify(inspectionJson(r), null, 2)}\n`);
  else {
    ctx.stdout(formatInspection(r));
    for (const s of r.skipped) ctx.log.info(`skipped [${s.menu}] ${s.what}: ${s.reason}`);
  }
  return 0;
}

async function boot(argv: string[], ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommandArgs(
    'iso',
    argv,
    { sha256: { type: 'string' }, sums: { type: 'string' }, keyring: { type: 'string' }, entry: { type: 'string' }, 'no-kexec': { type: 'boolean' }, out: { type: 'string' } },
    { min: 1, max: 1, names: 'URL or FILE' },
  );
  const target = positionals[0]!;
  if (values.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(values.sha256)) throw new UsageError('--sha256 needs 64 hex digits', { command: 'iso' });
  if (values.keyring !== undefined && values.sums === undefined) throw new UsageError('--keyring is for checking --sums: give both', { command: 'iso' });
  if (values.entry !== undefined && !/^[1-9]\d{0,3}$/.test(values.entry)) throw new UsageError(`--entry must be an entry number (1, 2, ...), not '${values.entry}'`, { command: 'iso' });
  if (values.out !== undefined && !values['no-kexec']) throw new UsageError('--out DIR needs --no-kexec', { command: 'iso' });
  if (values['no-kexec'] && values.out === undefined) throw new UsageError('--no-kexec needs --out DIR (where to write the files)', { command: 'iso' });
  await runIsoBoot(
    {
      target,
      sha256: values.sha256?.toLowerCase(),
      ...(values.sums !== undefined ? { sums: values.sums } : {}),
      ...(values.keyring !== undefined ? { keyring: values.keyring } : {}),
      entry: values.entry === undefined ? undefined : Number(values.entry),
      outDir: values.out === undefined ? undefined : resolve(ctx.cwd, values.out),
      cwd: ctx.cwd,
      consoles: await runningConsoles(),
      isTTY: ctx.isTTY,
    },
    { log: ctx.log, signal: ctx.signal },
  );
  return 0;
}

export const isoCommand: Command = {
  name: 'iso',
  summary: 'distribution ISOs: what one boots (inspect); boot one (boot)',
  help: HELP,
  async run(argv, ctx) {
    const [sub, ...rest] = argv;
    if (sub === '--help' || sub === '-h') throw new HelpRequested();
    if (sub === 'inspect') return inspect(rest, ctx);
    if (sub === 'boot') return boot(rest, ctx);
    if (sub === undefined) throw new UsageError('missing the subcommand: inspect or boot', { command: 'iso' });
    throw new UsageError(`unknown subcommand '${sub}': use inspect or boot`, { command: 'iso' });
  },
};
