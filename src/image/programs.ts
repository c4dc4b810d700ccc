// The native programs stiefelOS carries, and finding them on the host.
import { access, constants, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { StiefelError } from '../errors';
import { TFTP_BOOT_FILES } from '../pxe/dnsmasq-conf';
import { PACKAGES, formatPackages, type PackageNames } from './packages';

export interface ProgramSpec {
  /** The command name, searched for on the host. */
  name: string;
  /** Where known: named in the error when the program is missing. */
  packages?: PackageNames;
  /** More names for the same multi-call binary, made as symlinks next to it. */
  links?: string[];
}

/** What stiefelctl drives inside stiefelOS (busybox and node are added apart). */
export const IMAGE_PROGRAMS: readonly ProgramSpec[] = [
  { name: 'kexec', packages: PACKAGES.kexec },
  { name: 'ip', packages: PACKAGES.ip },
  { name: 'wg', packages: PACKAGES.wg },
  { name: 'cryptsetup', packages: PACKAGES.cryptsetup },
  {
    name: 'lvm',
    packages: PACKAGES.lvm,
    links: ['lvs', 'vgs', 'pvs', 'lvchange', 'vgchange', 'vgscan', 'pvscan', 'lvscan', 'vgmknodes'],
  },
  { name: 'blkid', packages: PACKAGES.blkid },
  { name: 'mount', packages: PACKAGES.mount },
  { name: 'umount', packages: PACKAGES.umount },
  // Boot-entry discovery mounts partitions through read-only loop devices by
  // offset, with options busybox's losetup lacks.
  { name: 'losetup', packages: PACKAGES.losetup },
  // kmod's modprobe reads the regenerated modules.*.bin indexes and handles
  // compressed modules; busybox's does not.
  { name: 'modprobe', packages: PACKAGES.kmod },
  // The PXE boot services: DHCP/ProxyDHCP and TFTP for desktops with no stick.
  { name: 'dnsmasq', packages: PACKAGES.dnsmasq },
  // Reads the stiefelOS it would serve by PXE, to be sure no secret is inside.
  { name: 'zstd', packages: PACKAGES.zstd },
  // Checks a distribution's signed SHA256SUMS before an ISO is booted (iso boot --sums).
  { name: 'gpgv', packages: PACKAGES.gpgv },
];

/**
 * iPXE's first stages, served by TFTP to PXE ROMs: carried at the host's
 * path, which is also config server.pxe.ipxe_dir's default.
 */
export const IPXE_BOOT_FILES = {
  dir: '/usr/lib/ipxe',
  files: Object.values(TFTP_BOOT_FILES),
  packages: PACKAGES.ipxe,
} as const;

export const BUSYBOX: ProgramSpec = { name: 'busybox', packages: PACKAGES.busybox };

/**
 * The directories to search: PATH, then the sbin sibling of each bin
 * directory on it (a user's PATH often lacks /usr/sbin, where kexec lives).
 */
export function programSearchDirs(pathVariable: string | undefined): string[] {
  const dirs = (pathVariable ?? '/usr/local/bin:/usr/bin:/bin').split(':').filter((d) => posix.isAbsolute(d));
  const out: string[] = [];
  for (const d of dirs) out.push(d);
  for (const d of dirs) if (/\/bin$/.test(d)) out.push(d.replace(/bin$/, 'sbin'));
  return [...new Set(out)];
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return false;
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The first executable named `name` in `dirs`, or undefined. */
export async function lookupProgram(name: string, dirs: readonly string[]): Promise<string | undefined> {
  for (const d of dirs) {
    const candidate = posix.join(d, name);
    if (await isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

/** Like lookupProgram, but a missing program is a StiefelError naming its package. */
export async function findProgram(spec: ProgramSpec | string, dirs: readonly string[]): Promise<string> {
  const name = typeof spec === 'string' ? spec : spec.name;
  if (name.includes('/')) {
    if (await isExecutableFile(name)) return name;
    throw new StiefelError('E_IMAGE_PROGRAM', `program ${name} does not exist or is not executable`);
  }
  const found = await lookupProgram(name, dirs);
  if (found !== undefined) return found;
  const packages = typeof spec === 'string' ? undefined : spec.packages;
  const hint = packages ? `install ${formatPackages(packages)}` : 'install the package that provides it';
  throw new StiefelError('E_IMAGE_PROGRAM', `program '${name}' is not installed (not in ${dirs.join(':')}): ${hint}`);
}
