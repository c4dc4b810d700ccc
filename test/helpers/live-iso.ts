// An ISO shaped like Debian live, with Debian's real live parts: the kernel
// of a Debian system debootstrapped with linux-image-amd64 and live-boot
// (cached in the test cache), and the initramfs initramfs-tools made there
// with live-boot's hooks, the one a Debian live ISO carries. What differs
// is the root in /live/filesystem.squashfs: instead of a whole desktop, a
// busybox whose /sbin/init says on the console that it runs, with the
// command line and the mounts live-boot left (so a test sees how the ISO
// was found), then powers off. Of the kernel's modules it holds what a
// live system's /lib/modules has for nvdimm (the drivers/nvdimm modules
// and the modules.* index files), which stiefelOS takes from there to keep
// a downloaded ISO in RAM; the rest would only make the download longer.
// BIOS-bootable with isolinux, as Debian's.
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { debianBase, type DebianBaseOptions } from './debian-chroot';
import { isolinuxIso, ISOLINUX_BIN, LDLINUX } from './mini-iso';

/** Debian's busybox-static (scripts/setup.sh installs it). */
const BUSYBOX = '/bin/busybox';

/** The Debian system whose kernel and live-boot initramfs the ISO carries. Also made by the prebuild. */
export const LIVE_ISO_BASE: Pick<DebianBaseOptions, 'name' | 'include'> = { name: 'live', include: ['linux-image-amd64', 'live-boot'] };

/** What the squashfs root's /sbin/init prints first on the console. */
export const LIVE_ROOT_MARK = 'STIEFEL-LIVE-ROOT: /sbin/init of the squashfs runs';

/** What it prints last, before it powers off. */
export const LIVE_ROOT_END = 'STIEFEL-LIVE-ROOT: done, powering off';

const LIVE_INIT = `#!/bin/busybox sh
# The live root's init (made by the test): show that it runs and how the ISO was found.
/bin/busybox mount -t proc proc /proc 2>/dev/null
echo "${LIVE_ROOT_MARK}, kernel $(/bin/busybox uname -r)" >/dev/console
echo "STIEFEL-LIVE-CMDLINE: $(/bin/busybox cat /proc/cmdline)" >/dev/console
/bin/busybox sed 's/^/STIEFEL-LIVE-MOUNT: /' /proc/mounts >/dev/console
echo "${LIVE_ROOT_END}" >/dev/console
/bin/busybox sync
/bin/busybox poweroff -f
`;

export interface LiveIso {
  iso: string;
  /** The kernel release of the ISO's kernel (the Debian base's). */
  release: string;
}

/** Writes `dir`/debian-live-test.iso and returns its path. */
export async function makeLiveIso(dir: string, cacheDir: string, log?: (line: string) => void): Promise<LiveIso> {
  const base = await debianBase({ ...LIVE_ISO_BASE, cacheDir, ...(log ? { log } : {}) });
  const boot = readdirSync(join(base, 'boot'));
  const kernel = boot.find((f) => f.startsWith('vmlinuz-'));
  const initrd = boot.find((f) => f.startsWith('initrd.img-'));
  if (!kernel || !initrd) throw new Error(`the live base ${base} has no kernel and initrd in /boot (${boot.join(', ')})`);
  const release = kernel.slice('vmlinuz-'.length);

  const root = join(dir, 'live-root');
  // etc/network: live-boot writes the interfaces file there.
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'run', 'tmp', 'etc/network']) mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin', 'busybox'));
  const modules = join(base, 'lib', 'modules', release);
  const liveModules = join(root, 'lib', 'modules', release);
  mkdirSync(join(liveModules, 'kernel', 'drivers'), { recursive: true });
  for (const f of readdirSync(modules).filter((n) => n.startsWith('modules.'))) copyFileSync(join(modules, f), join(liveModules, f));
  cpSync(join(modules, 'kernel', 'drivers', 'nvdimm'), join(liveModules, 'kernel', 'drivers', 'nvdimm'), { recursive: true });
  writeFileSync(join(root, 'sbin', 'init'), LIVE_INIT);
  chmodSync(join(root, 'sbin', 'init'), 0o755);
  writeFileSync(join(root, 'etc', 'hostname'), 'debian-live-test\n');

  const tree = join(dir, 'live-tree');
  for (const d of ['live', 'isolinux', '.disk']) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync(join(base, 'boot', kernel), join(tree, 'live', 'vmlinuz'));
  copyFileSync(join(base, 'boot', initrd), join(tree, 'live', 'initrd.img'));
  execFileSync('mksquashfs', [root, join(tree, 'live', 'filesystem.squashfs'), '-noappend', '-quiet', '-no-progress', '-all-root'], { stdio: ['ignore', 'ignore', 'pipe'] });
  copyFileSync(ISOLINUX_BIN, join(tree, 'isolinux', 'isolinux.bin'));
  copyFileSync(LDLINUX, join(tree, 'isolinux', 'ldlinux.c32'));
  // Debian live's own entry (live-build's isolinux live.cfg), with this ISO's file names.
  writeFileSync(
    join(tree, 'isolinux', 'isolinux.cfg'),
    ['default live', 'prompt 0', 'timeout 0', 'label live', '\tmenu label ^Live system (amd64)', '\tmenu default', '\tlinux /live/vmlinuz', '\tinitrd /live/initrd.img', '\tappend boot=live components quiet splash', ''].join('\n'),
  );
  writeFileSync(join(tree, '.disk', 'info'), 'Debian GNU/Linux 12 "Bookworm" - live amd64 (assembled by the test)\n');
  return { iso: isolinuxIso(tree, join(dir, 'debian-live-test.iso'), 'd-live 12 test amd64'), release };
}
