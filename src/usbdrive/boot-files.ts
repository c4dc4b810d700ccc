// The distribution's packaged boot loaders that go onto the stick, found on
// this host when the command runs: syslinux's gptmbr.bin and its BIOS
// modules, the syslinux installer (which writes ldlinux.sys into a FAT image
// through mtools, no mount needed), and systemd-boot's EFI binary.
import { execFile } from 'node:child_process';
import { open, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { StiefelError } from '../errors';
import { formatPackages, type PackageNames } from '../image/packages';

const execFileAsync = promisify(execFile);

export const BOOT_PACKAGES = {
  syslinuxModules: { debian: 'syslinux-common', fedora: 'syslinux-nonlinux', arch: 'syslinux' },
  syslinuxInstaller: { debian: 'syslinux', fedora: 'syslinux', arch: 'syslinux' },
  systemdBoot: { debian: 'systemd-boot-efi', fedora: 'systemd-boot-unsigned', arch: 'systemd' },
  mtools: { debian: 'mtools', fedora: 'mtools', arch: 'mtools' },
  dosfstools: { debian: 'dosfstools', fedora: 'dosfstools', arch: 'dosfstools' },
} satisfies Record<string, PackageNames>;

/** Where distributions put them (Debian first). */
const SYSLINUX_MBR_DIRS = ['/usr/lib/syslinux/mbr', '/usr/lib/SYSLINUX', '/usr/share/syslinux', '/usr/lib/syslinux/bios'];
const SYSLINUX_MODULE_DIRS = ['/usr/lib/syslinux/modules/bios', '/usr/share/syslinux', '/usr/lib/syslinux/bios'];
const SYSTEMD_BOOT_DIRS = ['/usr/lib/systemd/boot/efi'];
/**
 * menu.c32 needs libutil.c32. ldlinux.sys and ldlinux.c32 (the core every
 * syslinux 5+ loads first) are written by the installer itself, from its own
 * build, so core and boot sector always match.
 */
export const SYSLINUX_MODULES = ['menu.c32', 'libutil.c32'] as const;

export interface BootFiles {
  gptmbr: string;
  /** Module name -> host path. */
  syslinuxModules: ReadonlyMap<string, string>;
  syslinux: string;
  systemdBoot: string;
  /** e.g. "systemd-boot 252.39-1~deb12u2", from the binary's LoaderInfo string. */
  systemdBootVersion: string | undefined;
  /** e.g. "syslinux 6.04". */
  syslinuxVersion: string | undefined;
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

async function findIn(dirs: readonly string[], name: string, what: string, pkg: PackageNames): Promise<string> {
  for (const d of dirs) {
    const p = posix.join(d, name);
    if (await isFile(p)) return p;
  }
  throw new StiefelError('E_USB_BOOT_FILES', `${what} (${name}) is not installed (looked in ${dirs.join(', ')}): install ${formatPackages(pkg)}`);
}

export async function findProgramInPath(name: string, searchDirs: readonly string[], pkg: PackageNames): Promise<string> {
  for (const d of searchDirs) {
    const p = posix.join(d, name);
    if (await isFile(p)) return p;
  }
  throw new StiefelError('E_USB_TOOL', `${name} is not installed: install ${formatPackages(pkg)}`);
}

/** "systemd-boot 252.39-1~deb12u2" from the "#### LoaderInfo: ... ####" string systemd-boot carries. */
export function systemdBootVersionOf(binary: Uint8Array): string | undefined {
  const b = Buffer.from(binary.buffer, binary.byteOffset, binary.byteLength);
  const at = b.indexOf('#### LoaderInfo: ', 0, 'latin1');
  if (at < 0) return undefined;
  const end = b.indexOf(' ####', at + 17, 'latin1');
  return end < 0 || end - at > 200 ? undefined : b.toString('latin1', at + 17, end);
}

async function readAll(path: string, max: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export async function findBootFiles(searchDirs: readonly string[]): Promise<BootFiles> {
  const gptmbr = await findIn(SYSLINUX_MBR_DIRS, 'gptmbr.bin', "syslinux's GPT boot code", BOOT_PACKAGES.syslinuxModules);
  const modules = new Map<string, string>();
  for (const m of SYSLINUX_MODULES) modules.set(m, await findIn(SYSLINUX_MODULE_DIRS, m, 'a syslinux BIOS module', BOOT_PACKAGES.syslinuxModules));
  const systemdBoot = await findIn(SYSTEMD_BOOT_DIRS, 'systemd-bootx64.efi', 'systemd-boot for x86_64 UEFI', BOOT_PACKAGES.systemdBoot);
  const syslinux = await findProgramInPath('syslinux', searchDirs, BOOT_PACKAGES.syslinuxInstaller);
  const { size } = await stat(gptmbr);
  if (size !== 440) throw new StiefelError('E_USB_BOOT_FILES', `${gptmbr} is ${size} bytes, not the 440 of MBR boot code: reinstall ${formatPackages(BOOT_PACKAGES.syslinuxModules)}`);
  const systemdBootVersion = systemdBootVersionOf(await readAll(systemdBoot, 4 * 1024 * 1024));
  let syslinuxVersion: string | undefined;
  try {
    const r = await execFileAsync(syslinux, ['--version'], { encoding: 'utf8' });
    syslinuxVersion = /syslinux \S+/.exec(`${r.stdout}${r.stderr}`)?.[0];
  } catch (err) {
    // `syslinux --version` exits 1 on some builds while printing it.
    const e = err as { stdout?: string; stderr?: string };
    syslinuxVersion = /syslinux \S+/.exec(`${e.stdout ?? ''}${e.stderr ?? ''}`)?.[0];
  }
  return { gptmbr, syslinuxModules: modules, syslinux, systemdBoot, systemdBootVersion, syslinuxVersion };
}
