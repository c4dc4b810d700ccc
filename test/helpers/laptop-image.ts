// Builds the "laptop" disk image the end-to-end test boots on the desktop VM:
// GPT, an ext4 /boot and an ext4 root holding a minimal Debian made with
// debootstrap, with linux-image-amd64, nbd-client, wireguard-tools, Node and
// stiefelctl installed and `stiefelctl setup-server-os --root` run on it.
//
// Two stages, each cached under CACHE_DIR keyed by a hash of its inputs:
//   base   debootstrap (+ dracut for that family): the slow part, minutes;
//   image  base + this checkout's stiefelctl + setup-server-os + partitions:
//          about a minute, redone whenever the bundle or the recipe changes.
// The partitions are made with `mke2fs -d` from directories and put into
// place with dd, so nothing is mounted on the host while building.
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { systemRunner } from '../../src/disk/runner';
import { silentLogger } from '../../src/log';
import { withChrootMounts } from '../../src/server-os/setup';
import { pruneCache } from './test-cache';

export type LaptopFamily = 'initramfs-tools' | 'dracut';

export interface LaptopImageOptions {
  family: LaptopFamily;
  /** Where the stages are cached. */
  cacheDir: string;
  /** The bundled CLI to install into the image (dist/stiefelctl.js). */
  stiefelctl: string;
  /** The shared secret the laptop holds (the same as the desktop's stiefelOS). */
  secret: string;
  /** The laptop's config.yaml; by default the secret and server.disk /dev/vda. */
  config?: string;
  /** Progress lines for a person watching. */
  log?: (line: string) => void;
  mirror?: string;
  suite?: string;
}

export interface LaptopImage {
  /** The cached raw disk image; copy it before writing to it. */
  path: string;
  family: LaptopFamily;
  kernelVersion: string;
  rootUuid: string;
  bootUuid: string;
  /** Byte offset and size of the root partition inside the image. */
  root: { offset: number; size: number };
  boot: { offset: number; size: number };
}

const RECIPE_VERSION = 1;
const SECTOR = 512;
const BOOT_START_SECTOR = 2048;
// stiefelOS built with --pxe carries its own served copy: about 110 MB of it in /boot.
const BOOT_SIZE = 320 * 1024 * 1024;
const ROOT_SIZE = 2048 * 1024 * 1024;
const DISK_SIZE = BOOT_START_SECTOR * SECTOR + BOOT_SIZE + ROOT_SIZE + 1024 * 1024;
// Fixed file-system UUIDs: the laptop OS's fstab and command line name them.
const BOOT_UUID = '5713f2b0-0b00-4e00-8000-00000000b001';
const ROOT_UUID = '5713f2b0-0b00-4e00-8000-00000000f002';

const BASE_PACKAGES = [
  'linux-image-amd64',
  'nbd-client',
  'wireguard-tools',
  'systemd-sysv',
  'udev',
  'iproute2',
  'kmod',
  'e2fsprogs',
  'libstdc++6',
  'procps',
  // initramfs-tools compresses with zstd when it is there (else gzip), as
  // Debian desktops install it.
  'zstd',
  // What stiefelOS carries, for setup-server-os to build it for this laptop
  // (the Debian package depends on them).
  'kexec-tools',
  'busybox-static',
  'cryptsetup-bin',
  'lvm2',
  'binutils',
  // The PXE boot services stiefelOS carries (DHCP/TFTP, iPXE's first stages).
  'dnsmasq-base',
  'ipxe',
  // stiefel-nbd-reconnect, in the laptop OS on the desktop (the package depends on it).
  'python3',
];

/**
 * A desktop installation's network manager, with its stock configuration:
 * the link and the tunnel must survive it (setup-server-os tells it to leave
 * stiefellink and stiefelwg alone). Installed by apt after debootstrap:
 * debootstrap cannot configure polkitd, which it depends on.
 */
const DESKTOP_PACKAGES = ['network-manager'];

function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

export function sh(file: string, args: string[], options: { cwd?: string; input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${file} ${args.join(' ')} exited ${code}:\n${(err || out).trim().split('\n').slice(-15).join('\n')}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/**
 * initramfs-tools: debootstrap, then the desktop's packages. dracut: a copy
 * of that base with dracut installed in place of initramfs-tools (one
 * debootstrap less on a new machine: about two minutes).
 */
async function buildBase(dir: string, options: Required<Pick<LaptopImageOptions, 'family' | 'mirror' | 'suite' | 'cacheDir'>>, log: (l: string) => void): Promise<void> {
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    let install: string;
    if (options.family === 'dracut') {
      const from = await laptopBase({ ...options, family: 'initramfs-tools', log });
      log('copying the initramfs-tools base system; installing dracut in place of initramfs-tools');
      await sh('cp', ['-a', from.dir, tmp]);
      install = 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dracut';
    } else {
      log(`debootstrap ${options.suite} (${options.family}) into the cache; this takes a few minutes once`);
      await sh('debootstrap', [
        '--variant=minbase',
        `--include=${[...BASE_PACKAGES, 'initramfs-tools'].join(',')}`,
        options.suite,
        tmp,
        options.mirror,
      ]);
      log(`installing ${DESKTOP_PACKAGES.join(', ')}`);
      install = `DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${DESKTOP_PACKAGES.join(' ')}`;
    }
    await copyFile('/etc/resolv.conf', join(tmp, 'etc/resolv.conf'));
    await withChrootMounts(tmp, () => sh('chroot', [tmp, 'sh', '-c', install]), { runner: systemRunner, log: silentLogger });
    await rm(join(tmp, 'etc/resolv.conf'), { force: true });
    await sh('sh', ['-c', `rm -rf ${tmp}/var/cache/apt/archives/*.deb ${tmp}/var/lib/apt/lists/*`]);
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

export async function kernelVersionOf(root: string): Promise<string> {
  const versions = (await readdir(join(root, 'lib/modules'))).sort();
  const v = versions.at(-1);
  if (!v) throw new Error(`no kernel in ${root}/lib/modules`);
  return v;
}

/** The marker service the end-to-end test waits for: proves the root is writable over the network. */
const MARKER_SCRIPT = `#!/bin/sh
# stiefelsystem end-to-end test marker: writes the token from the command
# line onto the root file system (which lives on the laptop's disk, served
# over NBD), syncs, reports on the console and powers off. With
# stiefel_e2e.cable=N it first writes N records, one a second, each fsynced
# before it is reported (the cable scenario pulls the cable meanwhile), and
# reports the root's mount options and the kernel's disk errors; with
# stiefel_e2e.reset=1 it then resets its end of the disk connection (ss -K)
# and writes three more; with stiefel_e2e.then=cut it then goes on writing
# records until the desktop's power is cut (it never powers off).
set -u
token=
bench=
cable=
services=
reset=
afterwards=
for w in $(cat /proc/cmdline); do
  case "$w" in
    stiefel_e2e.token=*) token=\${w#stiefel_e2e.token=} ;;
    stiefel_e2e.bench=*) bench=\${w#stiefel_e2e.bench=} ;;
    stiefel_e2e.cable=*) cable=\${w#stiefel_e2e.cable=} ;;
    stiefel_e2e.services=1) services=1 ;;
    stiefel_e2e.reset=1) reset=1 ;;
    stiefel_e2e.then=*) afterwards=\${w#stiefel_e2e.then=} ;;
  esac
done
[ -n "$token" ] || exit 0
console=/dev/ttyS0
say() { echo "$*" > "$console"; }
rootdev=$(findmnt -n -o SOURCE /)
say "STIEFEL-E2E-ROOT $rootdev"
if [ "$bench" = 1 ]; then
  # Sequential throughput of the network disk, seen from the laptop OS.
  r=$(dd if=/dev/nbd0 of=/dev/null bs=1M count=256 iflag=direct 2>&1 | tail -n1)
  say "STIEFEL-E2E-BENCH read $r"
  # Two readers at once, of the same 256 MiB (now in the laptop's page cache):
  # with nbd-client -C, each CPU's requests go out on a connection of its own.
  t0=$(date +%s%N)
  dd if=/dev/nbd0 of=/dev/null bs=1M count=128 iflag=direct 2>/dev/null &
  dd if=/dev/nbd0 of=/dev/null bs=1M count=128 skip=128 iflag=direct 2>/dev/null &
  wait
  t1=$(date +%s%N)
  say "STIEFEL-E2E-BENCH read2 268435456 bytes in $(( (t1 - t0) / 1000000 )) ms"
  w=$(dd if=/dev/zero of=/var/tmp/stiefel-bench bs=1M count=128 oflag=direct conv=fsync 2>&1 | tail -n1)
  rm -f /var/tmp/stiefel-bench
  say "STIEFEL-E2E-BENCH write $w"
fi
# The MTUs of the link to the laptop and of the tunnel (link.mtu).
say "STIEFEL-E2E-MTU $(cat /sys/class/net/stiefellink/mtu) $(cat /sys/class/net/stiefelwg/mtu 2>/dev/null || echo none)"
mkdir -p /var/lib/stiefel-e2e
echo "$token" > /var/lib/stiefel-e2e/marker
sync
say "STIEFEL-E2E-MARKER $token"
if [ -n "$cable" ]; then
  if [ -n "$services" ]; then
    # The cable scenario watches the laptop OS's own services through the
    # pull: NetworkManager running, and the laptop watch watching (it warns
    # of a silence only once it has heard the laptop). Each check costs
    # seconds under emulation, and Node takes a while to start: its first
    # line is looked for every 5 s only once its unit runs.
    i=0
    until systemctl is-active --quiet NetworkManager && systemctl is-active --quiet stiefel-laptop-watch && systemctl is-active --quiet stiefel-nbd-reconnect; do
      i=$((i + 1))
      [ "$i" -ge 300 ] && break
      sleep 1
    done
    until journalctl -q -o cat -u stiefel-laptop-watch 2>/dev/null | grep -q 'watching the laptop'; do
      i=$((i + 5))
      [ "$i" -ge 300 ] && break
      sleep 5
    done
    say "STIEFEL-E2E-SERVICES after $i s: NetworkManager $(systemctl is-active NetworkManager), stiefel-laptop-watch $(systemctl is-active stiefel-laptop-watch), stiefel-nbd-reconnect $(systemctl is-active stiefel-nbd-reconnect)"
  fi
  # The kernel's disk errors, and the sockets the NBD driver took from stiefel-nbd-reconnect.
  disk_errors() { dmesg | grep -c -E 'I/O error|EXT4-fs (error|warning)|Remounting filesystem read-only'; }
  nbd_reconnects() { dmesg | grep -c -E 'nbd[0-9]+: reconnected socket'; }
  n=0
  record() {
    n=$((n + 1))
    echo "$n" >> /var/lib/stiefel-e2e/writes
    # coreutils' sync FILE: fsync, returns once the record is on the laptop's disk.
    if sync /var/lib/stiefel-e2e/writes; then say "STIEFEL-E2E-WRITE $n"; else say "STIEFEL-E2E-WRITE-FAILED $n"; fi
    sleep 1
  }
  while [ "$n" -lt "$cable" ]; do record; done
  # NetworkManager ran meanwhile, and left the link and the tunnel alone.
  say "STIEFEL-E2E-NM $(systemctl is-active NetworkManager) $(nmcli -t -f DEVICE,STATE device 2>&1 | tr '\\n' ' ')"
  say "STIEFEL-E2E-ROOT-OPTIONS $(findmnt -n -o OPTIONS /)"
  say "STIEFEL-E2E-DISK-ERRORS $(disk_errors)"
  # What the NBD driver saw of the connection: given up (request timeout) and replaced (stiefel-nbd-reconnect).
  say "STIEFEL-E2E-NBD-EVENTS timed-out=$(dmesg | grep -c -E 'nbd[0-9]+: Connection timed out') reconnected=$(nbd_reconnects)"
  if [ "$reset" = 1 ]; then
    # The reconnect path for certain (a pulled cable may be ridden out by
    # TCP): the desktop's end of the disk connection is aborted (ss -K; the
    # kernel sends the laptop a reset), the NBD driver finds it dead and
    # stiefel-nbd-reconnect hands it a new one, while the records go on.
    . /run/stiefelsystem/nbd.conf
    # Said first: the helper's lines may come before ss has returned.
    say "STIEFEL-E2E-RESETTING"
    say "STIEFEL-E2E-RESET $(ss -K -H -t -n state established "( dport = :$STIEFEL_NBD_PORT )" | wc -l)"
    i=0
    while [ "$i" -lt 3 ]; do record; i=$((i + 1)); done
    say "STIEFEL-E2E-RESET-EVENTS reconnected=$(nbd_reconnects) disk-errors=$(disk_errors)"
  fi
  if [ "$afterwards" = cut ]; then
    while :; do record; done
  fi
fi
systemctl --no-block poweroff
`;

// As soon as the root file system is writable: the marker measures the chain
// up to the laptop OS writing to its disk, not the rest of its boot.
const MARKER_UNIT = `[Unit]
Description=stiefelsystem end-to-end test marker
DefaultDependencies=no
After=systemd-remount-fs.service
Wants=systemd-remount-fs.service
RequiresMountsFor=/var/lib

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/stiefel-e2e-marker

[Install]
WantedBy=sysinit.target
`;

async function customize(root: string, options: LaptopImageOptions, log: (l: string) => void): Promise<void> {
  await writeFile(join(root, 'etc/hostname'), 'laptop\n');
  await writeFile(join(root, 'etc/hosts'), '127.0.0.1 localhost\n127.0.1.1 laptop\n');
  await writeFile(
    join(root, 'etc/fstab'),
    `UUID=${ROOT_UUID} / ext4 defaults 0 1\nUUID=${BOOT_UUID} /boot ext4 defaults 0 2\n`,
  );
  // The command line this laptop boots with (systemd's kernel-install
  // convention); setup-server-os records it for the server.
  await mkdir(join(root, 'etc/kernel'), { recursive: true });
  await writeFile(join(root, 'etc/kernel/cmdline'), `root=UUID=${ROOT_UUID} ro console=ttyS0 systemd.show_status=1\n`);
  await writeFile(join(root, 'usr/local/sbin/stiefel-e2e-marker'), MARKER_SCRIPT, { mode: 0o755 });
  await writeFile(join(root, 'etc/systemd/system/stiefel-e2e-marker.service'), MARKER_UNIT);
  await mkdir(join(root, 'etc/systemd/system/sysinit.target.wants'), { recursive: true });
  await sh('ln', ['-sf', '/etc/systemd/system/stiefel-e2e-marker.service', join(root, 'etc/systemd/system/sysinit.target.wants/')]);
  await sh('chroot', [root, 'passwd', '-d', 'root']);
  if (options.family === 'dracut') {
    // As Fedora does (Debian's dracut would use gzip, three times slower to unpack).
    await mkdir(join(root, 'etc/dracut.conf.d'), { recursive: true });
    await writeFile(join(root, 'etc/dracut.conf.d/10-compress.conf'), 'compress="zstd"\n');
  }

  log('installing Node and stiefelctl into the laptop OS');
  await copyFile(process.execPath, join(root, 'usr/local/bin/node'));
  await chmod(join(root, 'usr/local/bin/node'), 0o755);
  await mkdir(join(root, 'usr/local/lib/stiefelsystem'), { recursive: true });
  await copyFile(options.stiefelctl, join(root, 'usr/local/lib/stiefelsystem/stiefelctl.js'));
  // Where the Debian package puts it: the autokexec unit runs /usr/bin/stiefelctl.
  await writeFile(join(root, 'usr/bin/stiefelctl'), '#!/bin/sh\nexec /usr/local/bin/node /usr/local/lib/stiefelsystem/stiefelctl.js "$@"\n', {
    mode: 0o755,
  });

  // What 'stiefelctl init' writes on the laptop: the config (naming the disk
  // as the laptop VM sees it) and the shared secret, which stiefelOS carries.
  await mkdir(join(root, 'etc/stiefelsystem'), { recursive: true, mode: 0o700 });
  await writeFile(join(root, 'etc/stiefelsystem/config.yaml'), options.config ?? 'secret: secret\nserver:\n  disk: /dev/vda\n');
  await copyFile(options.secret, join(root, 'etc/stiefelsystem/secret'));
  await chmod(join(root, 'etc/stiefelsystem/secret'), 0o600);

  log(`stiefelctl setup-server-os --root (${options.family}); regenerates the initramfs, builds stiefelOS for this laptop`);
  await sh(process.execPath, [options.stiefelctl, 'setup-server-os', '--root', root, '--yes']);
}

async function assemble(root: string, out: string): Promise<void> {
  const work = `${out}.parts`;
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    const bootDir = join(work, 'boot');
    await rename(join(root, 'boot'), bootDir);
    await mkdir(join(root, 'boot'));
    await sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', BOOT_UUID, '-L', 'boot', '-d', bootDir, join(work, 'boot.ext4'), `${BOOT_SIZE / 1024}k`]);
    await sh('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-U', ROOT_UUID, '-L', 'root', '-d', root, join(work, 'root.ext4'), `${ROOT_SIZE / 1024}k`]);
    await rm(out, { force: true });
    await sh('truncate', ['-s', String(DISK_SIZE), out]);
    const rootStart = BOOT_START_SECTOR + BOOT_SIZE / SECTOR;
    await sh('sgdisk', [
      `-n1:${BOOT_START_SECTOR}:+${BOOT_SIZE / 1024}K`, '-t1:ea00', '-c1:boot',
      `-n2:${rootStart}:+${ROOT_SIZE / 1024}K`, '-t2:8304', '-c2:root',
      out,
    ]);
    await sh('dd', [`if=${join(work, 'boot.ext4')}`, `of=${out}`, 'bs=1M', `seek=${(BOOT_START_SECTOR * SECTOR) / 2 ** 20}`, 'conv=notrunc,sparse', 'status=none']);
    await sh('dd', [`if=${join(work, 'root.ext4')}`, `of=${out}`, 'bs=1M', `seek=${(rootStart * SECTOR) / 2 ** 20}`, 'conv=notrunc,sparse', 'status=none']);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export function laptopLayout(): Pick<LaptopImage, 'rootUuid' | 'bootUuid' | 'root' | 'boot'> {
  return {
    rootUuid: ROOT_UUID,
    bootUuid: BOOT_UUID,
    boot: { offset: BOOT_START_SECTOR * SECTOR, size: BOOT_SIZE },
    root: { offset: BOOT_START_SECTOR * SECTOR + BOOT_SIZE, size: ROOT_SIZE },
  };
}

/** The debootstrapped base system of a family (cached; a few minutes once). */
export async function laptopBase(options: Pick<LaptopImageOptions, 'family' | 'cacheDir' | 'log' | 'mirror' | 'suite'>): Promise<{ dir: string; key: string }> {
  const log = options.log ?? (() => undefined);
  const suite = options.suite ?? 'bookworm';
  const mirror = options.mirror ?? 'http://deb.debian.org/debian';
  await mkdir(options.cacheDir, { recursive: true });
  const baseKey = sha256('base', String(RECIPE_VERSION), suite, mirror, options.family, BASE_PACKAGES.join(','), DESKTOP_PACKAGES.join(','), options.family === 'dracut' ? 'from the initramfs-tools base' : '');
  const baseDir = join(options.cacheDir, `laptop-base-${options.family}-${baseKey.slice(0, 16)}`);
  for (const gone of pruneCache(options.cacheDir, `laptop-base-${options.family}-`, basename(baseDir))) log(`removed ${gone} from the cache (built from other inputs)`);
  pruneCache(options.cacheDir, `laptop-root-${options.family}-`, '');
  if (!existsSync(baseDir)) await buildBase(baseDir, { family: options.family, suite, mirror, cacheDir: options.cacheDir }, log);
  else log(`laptop base system (${options.family}) from the cache`);
  return { dir: baseDir, key: baseKey };
}

export async function buildLaptopImage(options: LaptopImageOptions): Promise<LaptopImage> {
  const log = options.log ?? (() => undefined);
  const { dir: baseDir, key: baseKey } = await laptopBase(options);

  const imageKey = sha256(
    'image',
    baseKey,
    readFileSync(options.stiefelctl),
    readFileSync(process.execPath),
    MARKER_SCRIPT,
    MARKER_UNIT,
    readFileSync(options.secret),
    options.config ?? '',
    readFileSync(__filename),
  );
  const path = join(options.cacheDir, `laptop-${options.family}-${imageKey.slice(0, 16)}.img`);
  const kernelVersion = await kernelVersionOf(baseDir);
  if (existsSync(path)) {
    log(`laptop disk image (${options.family}) from the cache`);
  } else {
    const root = join(options.cacheDir, `laptop-root-${options.family}-${randomBytes(4).toString('hex')}`);
    try {
      log('copying the base system');
      await sh('cp', ['-a', baseDir, root]);
      await customize(root, options, log);
      log('making the ext4 file systems and the GPT disk image');
      const tmpImage = `${path}.tmp`;
      await assemble(root, tmpImage);
      await rename(tmpImage, path);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }
  pruneCache(options.cacheDir, `laptop-${options.family}-`, basename(path));
  await stat(path);
  return { path, family: options.family, kernelVersion, ...laptopLayout() };
}

