// An ISO shaped like Debian's netboot mini.iso, assembled at test time from
// Debian's own installer (the debian-installer-12-netboot-amd64 package:
// its kernel, its initrd, its text-mode menu line) with isolinux and
// xorriso: BIOS-bootable, the kernel and initrd at the top, /.disk/info.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const DI_ROOT = '/usr/lib/debian-installer/images';
export const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
export const LDLINUX = '/usr/lib/syslinux/modules/bios/ldlinux.c32';

/** The installer's text images for amd64 of the newest release the package ships (read from the host). */
export function debianInstallerDir(): string {
  const releases = existsSync(DI_ROOT) ? readdirSync(DI_ROOT).filter((r) => /^\d+$/.test(r)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const r of releases) {
    const dir = join(DI_ROOT, r, 'amd64', 'text', 'debian-installer', 'amd64');
    if (existsSync(join(dir, 'linux')) && existsSync(join(dir, 'initrd.gz'))) return dir;
  }
  throw new Error(`no debian-installer netboot images under ${DI_ROOT}: install debian-installer-12-netboot-amd64 (scripts/setup.sh does)`);
}

/** Writes `dir`/mini.iso and returns its path. */
export function makeMiniIso(dir: string): string {
  const di = debianInstallerDir();
  const root = join(dir, 'mini-tree');
  mkdirSync(join(root, 'isolinux'), { recursive: true });
  mkdirSync(join(root, '.disk'), { recursive: true });
  copyFileSync(join(di, 'linux'), join(root, 'linux'));
  copyFileSync(join(di, 'initrd.gz'), join(root, 'initrd.gz'));
  copyFileSync(ISOLINUX_BIN, join(root, 'isolinux', 'isolinux.bin'));
  copyFileSync(LDLINUX, join(root, 'isolinux', 'ldlinux.c32'));
  // The same entry as the installer's own txt.cfg, with the paths of this ISO.
  writeFileSync(
    join(root, 'isolinux', 'isolinux.cfg'),
    ['default install', 'prompt 0', 'timeout 0', 'label install', '\tmenu label ^Install', '\tkernel /linux', '\tappend vga=788 initrd=/initrd.gz --- quiet', ''].join('\n'),
  );
  writeFileSync(join(root, '.disk', 'info'), 'Debian GNU/Linux 12 "Bookworm" - Official NETBOOT amd64 (assembled by the test)\n');
  return isolinuxIso(root, join(dir, 'mini.iso'), 'ISOIMAGE');
}

/** `tree` (with isolinux/isolinux.bin) as a BIOS-bootable ISO at `iso`, Rock Ridge and Joliet names, labelled `label`. */
export function isolinuxIso(tree: string, iso: string, label: string): string {
  execFileSync(
    'xorriso',
    ['-as', 'mkisofs', '-quiet', '-o', iso, '-J', '-R', '-V', label, '-b', 'isolinux/isolinux.bin', '-c', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table', tree],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  return iso;
}
