// The laptop of the end-to-end journey: a disk that boots by itself through
// UEFI firmware and systemd-boot, holding a Debian 12 with stiefelsystem
// installed from its .deb with Debian's own nodejs, set up by the package's
// own `stiefelctl setup-server-os` as a user would run it.
//
//   GPT (disk GUID fixed: the config names the disk as PTUUID=...)
//     1  ESP, FAT32, /boot/efi: systemd-boot, loader.conf, the Debian entry
//        and its kernel + initrd (laid out as Debian's systemd-boot package
//        and kernel-install would), and what setup-server-os adds: the
//        "stiefelsystem: serve this disk" entry and stiefelOS
//     2  root, ext4, with /boot
//
// The FAT file system is made with mkfs.vfat and filled with mtools (the
// host kernel has no vfat). Also recorded at build time, on the same tree:
// the file list before the package, and after `setup-server-os --uninstall`
// and `apt purge` (compared by the test).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { systemRunner } from '../../src/disk/runner';
import { silentLogger } from '../../src/log';
import { withChrootMounts } from '../../src/server-os/setup';
import { kernelVersionOf, laptopBase, sh } from './laptop-image';
import { pruneCache } from './test-cache';
import { parseDocument } from 'yaml';

export const JOURNEY_DISK_GUID = '5713f2b0-0b00-4e00-8000-00000000d15c';
const ROOT_UUID = '5713f2b0-0b00-4e00-8000-00000000f0f0';
const ESP_VOLUME_ID = '5713D15C';
const SECTOR = 512;
const ESP_START = 2048;
// The laptop OS and stiefelOS (with its PXE copy, about 110 MB) side by side.
const ESP_SIZE = 384 * 1024 * 1024;
const ROOT_SIZE = 3 * 1024 * 1024 * 1024;
const DISK_SIZE = ESP_START * SECTOR + ESP_SIZE + ROOT_SIZE + 1024 * 1024;
const RECIPE_VERSION = 1;

export interface JourneyImage {
  path: string;
  esp: { offset: number; size: number };
  root: { offset: number; size: number };
  kernelVersion: string;
  /** Files (paths relative to /, and on the ESP) that the package, set-up, uninstall and purge left different from before the package. */
  purgeDiff: { added: string[]; removed: string[]; espAdded: string[]; espRemoved: string[] };
}

/** The journey marker: on the desktop it writes a fresh token; on the laptop it says what it finds. */
const MARKER = `#!/bin/sh
# stiefelsystem end-to-end journey marker.
console=/dev/ttyS0
say() { echo "$*" > "$console"; }
if grep -q 'stiefel\\.mac=' /proc/cmdline; then
	# Booted on the desktop from this disk over the cable: leave a fresh token.
	token=$(cat /proc/sys/kernel/random/uuid)
	mkdir -p /var/lib/stiefel-e2e
	echo "$token" > /var/lib/stiefel-e2e/marker
	sync
	say "STIEFEL-E2E-MARKER $token"
	systemctl --no-block poweroff
elif [ -f /var/lib/stiefel-e2e/marker ]; then
	# Back on the laptop itself: what the desktop left.
	say "STIEFEL-E2E-LAPTOP-SAW $(cat /var/lib/stiefel-e2e/marker)"
else
	say "STIEFEL-E2E-LAPTOP-UP"
fi
`;

const MARKER_UNIT = `[Unit]
Description=stiefelsystem end-to-end journey marker
DefaultDependencies=no
After=systemd-remount-fs.service
Wants=systemd-remount-fs.service
RequiresMountsFor=/var/lib

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/stiefel-journey-marker

[Install]
WantedBy=sysinit.target
`;

/** The test reads autokexec's words on the serial console (a real laptop has them in its journal). */
const AUTOKEXEC_CONSOLE = `[Service]
StandardOutput=journal+console
StandardError=journal+console
`;

function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

/** Every path under `root` (directories with a trailing /), for the before/after comparison. */
async function fileList(root: string): Promise<string[]> {
  const out = await sh('find', [root, '-xdev', '-mindepth', '1', '-printf', '%P%y\\n']);
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => (l.endsWith('d') ? `${l.slice(0, -1)}/` : l.slice(0, -1)));
}

/**
 * What apt, dpkg and the kernel's own hooks leave different anyway: their
 * state and caches, logs, and the initramfs regenerated twice (same name,
 * new bytes: only names are compared).
 */
const EXPECTED_CHURN = /^(var\/lib\/(dpkg|apt|systemd\/deb-systemd-[^/]*|ucf)\/|var\/cache\/|var\/log\/|etc\/ld\.so\.cache$|tmp\/|var\/tmp\/|run\/|root\/\.npm\/|etc\/apt\/)/;

function compareLists(before: string[], after: string[], churn: RegExp = EXPECTED_CHURN): { added: string[]; removed: string[] } {
  const b = new Set(before.filter((p) => !churn.test(p)));
  const a = new Set(after.filter((p) => !churn.test(p)));
  return { added: [...a].filter((p) => !b.has(p)).sort(), removed: [...b].filter((p) => !a.has(p)).sort() };
}

async function inChroot(root: string, script: string): Promise<string> {
  return withChrootMounts(root, () => sh('chroot', [root, 'sh', '-ec', script]), { runner: systemRunner, log: silentLogger });
}

async function installPackage(root: string, deb: string, log: (l: string) => void): Promise<void> {
  await copyFile('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
  await copyFile(deb, join(root, 'var/tmp/stiefelsystem.deb'));
  log(`apt install ./${basename(deb)} in the laptop OS (Debian's nodejs and the Depends from Debian's archive)`);
  await inChroot(root, 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq --no-install-recommends /var/tmp/stiefelsystem.deb >/dev/null');
  await rm(join(root, 'var/tmp/stiefelsystem.deb'), { force: true });
}

async function layOutEsp(root: string, kernelVersion: string): Promise<void> {
  const esp = join(root, 'boot/efi');
  await mkdir(join(esp, 'EFI/BOOT'), { recursive: true });
  await mkdir(join(esp, 'EFI/systemd'), { recursive: true });
  await mkdir(join(esp, 'loader/entries'), { recursive: true });
  await mkdir(join(esp, 'debian'), { recursive: true });
  const boot = join(root, 'usr/lib/systemd/boot/efi/systemd-bootx64.efi');
  await copyFile(boot, join(esp, 'EFI/BOOT/BOOTX64.EFI'));
  await copyFile(boot, join(esp, 'EFI/systemd/systemd-bootx64.efi'));
  await writeFile(join(esp, 'loader/loader.conf'), 'timeout 2\ndefault debian.conf\nconsole-mode keep\n');
  await writeFile(
    join(esp, 'loader/entries/debian.conf'),
    `title      Debian GNU/Linux 12 (bookworm)\nversion    ${kernelVersion}\nsort-key   debian\nlinux      /debian/vmlinuz\ninitrd     /debian/initrd.img\noptions    root=UUID=${ROOT_UUID} ro console=ttyS0,115200 systemd.show_status=1\n`,
  );
}

/** The laptop's kernel and (regenerated) initrd onto the ESP, as Debian's zz-systemd-boot hook would copy them. */
async function copyKernelToEsp(root: string, kernelVersion: string): Promise<void> {
  await copyFile(join(root, `boot/vmlinuz-${kernelVersion}`), join(root, 'boot/efi/debian/vmlinuz'));
  await copyFile(join(root, `boot/initrd.img-${kernelVersion}`), join(root, 'boot/efi/debian/initrd.img'));
}

async function assemble(root: string, out: string): Promise<void> {
  const work = `${out}.parts`;
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    // The ESP is its own file system: out of the root tree while that is made, then back.
    const espDir = join(work, 'esp');
    await rename(join(root, 'boot/efi'), espDir);
    await mkdir(join(root, 'boot/efi'));
    const espImg = join(work, 'esp.fat');
    await sh('truncate', ['-s', String(ESP_SIZE), espImg]);
    await sh('mkfs.vfat', ['-F', '32', '-i', ESP_VOLUME_ID, '-n', 'ESP', espImg]);
    const entries = (await readdir(espDir)).map((n) => join(espDir, n));
    await sh('mcopy', ['-s', '-i', espImg, ...entries, '::/']);
    await sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', ROOT_UUID, '-L', 'root', '-d', root, join(work, 'root.ext4'), `${ROOT_SIZE / 1024}k`]);
    await rm(join(root, 'boot/efi'), { recursive: true });
    await rename(espDir, join(root, 'boot/efi'));
    await rm(out, { force: true });
    await sh('truncate', ['-s', String(DISK_SIZE), out]);
    const rootStart = ESP_START + ESP_SIZE / SECTOR;
    await sh('sgdisk', ['-U', JOURNEY_DISK_GUID, `-n1:${ESP_START}:+${ESP_SIZE / 1024}K`, '-t1:ef00', '-c1:ESP', `-n2:${rootStart}:+${ROOT_SIZE / 1024}K`, '-t2:8304', '-c2:root', out]);
    await sh('dd', [`if=${espImg}`, `of=${out}`, 'bs=1M', `seek=${(ESP_START * SECTOR) / 2 ** 20}`, 'conv=notrunc,sparse', 'status=none']);
    await sh('dd', [`if=${join(work, 'root.ext4')}`, `of=${out}`, 'bs=1M', `seek=${(rootStart * SECTOR) / 2 ** 20}`, 'conv=notrunc,sparse', 'status=none']);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export function journeyLayout(): Pick<JourneyImage, 'esp' | 'root'> {
  return { esp: { offset: ESP_START * SECTOR, size: ESP_SIZE }, root: { offset: ESP_START * SECTOR + ESP_SIZE, size: ROOT_SIZE } };
}

export async function buildJourneyImage(options: { cacheDir: string; deb: string; secret: string; log?: (l: string) => void }): Promise<JourneyImage> {
  const log = options.log ?? (() => undefined);
  const base = await laptopBase({ family: 'initramfs-tools', cacheDir: options.cacheDir, log });
  const key = sha256('journey', String(RECIPE_VERSION), base.key, readFileSync(options.deb), readFileSync(options.secret), MARKER, MARKER_UNIT, readFileSync(__filename));
  const path = join(options.cacheDir, `journey-${key.slice(0, 16)}.img`);
  const meta = `${path}.json`;
  const kernelVersion = await kernelVersionOf(base.dir);
  if (existsSync(path) && existsSync(meta)) {
    log('journey laptop disk image from the cache');
    pruneCache(options.cacheDir, 'journey-', [basename(path), basename(meta)]);
    return { path, kernelVersion, purgeDiff: JSON.parse(readFileSync(meta, 'utf8')) as JourneyImage['purgeDiff'], ...journeyLayout() };
  }
  const root = join(options.cacheDir, `journey-root-${randomBytes(4).toString('hex')}`);
  try {
    log('copying the base system');
    await sh('cp', ['-a', base.dir, root]);
    await writeFile(join(root, 'etc/hostname'), 'laptop\n');
    await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n127.0.1.1 laptop\n');
    await writeFile(join(root, 'etc/fstab'), `UUID=${ROOT_UUID} / ext4 defaults 0 1\nUUID=${ESP_VOLUME_ID.slice(0, 4)}-${ESP_VOLUME_ID.slice(4)} /boot/efi vfat umask=0077 0 1\n`);
    await inChroot(root, 'passwd -d root >/dev/null');
    await mkdir(join(root, 'var/tmp'), { recursive: true });
    // The laptop's boot loader, before stiefelsystem comes: systemd-boot.
    await copyFile('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
    await inChroot(root, 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; apt-get install -y -qq --no-install-recommends systemd-boot-efi >/dev/null');
    await layOutEsp(root, kernelVersion);
    await copyKernelToEsp(root, kernelVersion);
    await rm(join(root, 'etc/resolv.conf'), { force: true });
    const before = await fileList(root);
    const espBefore = await fileList(join(root, 'boot/efi'));

    // The user's steps: install the package, init, setup-server-os.
    await installPackage(root, options.deb, log);
    log('stiefelctl init (with the journey secret), as root in the laptop OS');
    await inChroot(root, 'stiefelctl init >/dev/null 2>&1');
    await copyFile(options.secret, join(root, 'etc/stiefelsystem/secret'));
    await chmod(join(root, 'etc/stiefelsystem/secret'), 0o600);
    // The journey's settings in the config init wrote (its comments kept). On
    // the laptop itself setup-server-os would find the disk; offline it is named.
    const configPath = join(root, 'etc/stiefelsystem/config.yaml');
    const doc = parseDocument(readFileSync(configPath, 'utf8'));
    doc.setIn(['server', 'disk'], `PTUUID=${JOURNEY_DISK_GUID}`);
    doc.setIn(['server', 'return_delay_s'], 3);
    doc.setIn(['autokexec', 'delay_s'], 3);
    await writeFile(configPath, doc.toString());
    log('stiefelctl setup-server-os --yes in the laptop OS (Debian nodejs): hooks, initramfs, stiefelOS, boot entry, autokexec');
    await inChroot(root, 'stiefelctl setup-server-os --yes --cmdline "root=UUID=' + ROOT_UUID + ' ro console=ttyS0,115200 systemd.show_status=1"');
    await copyKernelToEsp(root, kernelVersion);
    // The test's own parts (not a user's): the marker, autokexec's words on the console.
    await writeFile(join(root, 'usr/local/sbin/stiefel-journey-marker'), MARKER, { mode: 0o755 });
    await writeFile(join(root, 'etc/systemd/system/stiefel-journey-marker.service'), MARKER_UNIT);
    await mkdir(join(root, 'etc/systemd/system/sysinit.target.wants'), { recursive: true });
    await sh('ln', ['-sf', '/etc/systemd/system/stiefel-journey-marker.service', join(root, 'etc/systemd/system/sysinit.target.wants/')]);
    await mkdir(join(root, 'etc/systemd/system/stiefel-autokexec.service.d'), { recursive: true });
    await writeFile(join(root, 'etc/systemd/system/stiefel-autokexec.service.d/test-console.conf'), AUTOKEXEC_CONSOLE);
    await rm(join(root, 'etc/resolv.conf'), { force: true });

    log('assembling the GPT disk: ESP (FAT32, mtools) and root (ext4)');
    const tmp = `${path}.tmp`;
    await assemble(root, tmp);

    // On the same tree, afterwards: the way out, and what it leaves.
    log('on the build tree: setup-server-os --uninstall, apt purge, apt autoremove --purge; comparing the file lists');
    await copyFile('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
    await inChroot(root, 'rm -rf /etc/systemd/system/stiefel-journey-marker.service /etc/systemd/system/sysinit.target.wants/stiefel-journey-marker.service /usr/local/sbin/stiefel-journey-marker /etc/systemd/system/stiefel-autokexec.service.d');
    await inChroot(root, 'stiefelctl setup-server-os --uninstall --yes >/dev/null 2>&1; export DEBIAN_FRONTEND=noninteractive; apt-get purge -y -qq stiefelsystem >/dev/null; apt-get autoremove --purge -y -qq >/dev/null');
    await rm(join(root, 'etc/resolv.conf'), { force: true });
    // The kernel and initrd on the ESP are the same names with new bytes (the initramfs regenerated).
    const esp = compareLists(espBefore, await fileList(join(root, 'boot/efi')), /^$/);
    const purgeDiff = { ...compareLists(before.filter((p) => !p.startsWith('boot/efi/')), (await fileList(root)).filter((p) => !p.startsWith('boot/efi/'))), espAdded: esp.added, espRemoved: esp.removed };
    await writeFile(meta, `${JSON.stringify(purgeDiff, null, 2)}\n`);
    await rename(tmp, path);
    pruneCache(options.cacheDir, 'journey-', [basename(path), basename(meta), basename(root)]);
    return { path, kernelVersion, purgeDiff, ...journeyLayout() };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
