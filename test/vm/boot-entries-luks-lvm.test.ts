// `stiefelctl boot-entries DISK --json --passphrase-file F` for real on
// LUKS2 and LVM inside a QEMU VM (Debian's 6.1 kernel: this host's kernel has
// no device-mapper, so the unit tests of src/disk can only script the tools).
//
// How the VM runs the test: stiefelOS (the image `stiefelctl build-image`
// writes, cached by test/helpers/e2e.ts) booted with no stiefel.role, so its
// /init gives the documented rescue shell on the serial console; a cpio
// appended to the initrd adds /stf4l/run.sh, which we start by typing its
// name. Nothing test-only is added to the product's /init: the script only
// uses what stiefelOS carries anyway (busybox, cryptsetup, lvm, losetup and
// the stiefelctl under test).
//
// The disks are partitioned and their plain file systems made on the host
// (test/helpers/disk-image.ts); what needs device-mapper is done by the
// script inside the VM before the checks: luksFormat, pvcreate, vgcreate,
// lvcreate, and copying the ext4 /boot file systems (made on the host, on a
// read-only disk) into the LUKS mappings and logical volumes.
//   /dev/vda  GPT: 1 (empty), 2 LUKS2 → ext4 /boot with BLS entries, 3 ext4 root
//   /dev/vdb  MBR: 1 ext4 root, 2 LVM PV → VG stf4lb: LVs boot (ext4, kernel pairs), root
//   /dev/vdc  GPT: 1 ESP (vfat), 2 LUKS2 → LVM PV → VG stf4lc: LVs boot (ext4, Fedora BLS), root
//   /dev/vdd  the three ext4 /boot file systems (read-only, the source of the copies)
//   /dev/vde  where the script writes its results for the host to read
// Then, per case: sha256 of the disk, stiefelctl boot-entries, sha256 again,
// and what is left: /sys/block/dm-*, /dev/mapper, losetup -a, our mounts,
// active LVs. Also a wrong passphrase, and one disk given as an image file.
//
// Budget (2 shared cores, TCG): stiefelOS boot ~20 s, setup ~15 s, seven
// stiefelctl runs ~3-6 s each: about 2 minutes on a quiet machine; under the
// load of another QEMU it took 5. Limits are about 3x the quiet times.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeNewc } from '../../src/cpio/newc';
import { buildDiskImage, type PartitionSpec } from '../helpers/disk-image';
import { E2E_CACHE_DIR, initrdWithOverlay, stiefelOsImage } from '../helpers/e2e';
import { withVms } from '../helpers/qemu';
import { requireRoot, requireTool } from '../helpers/tools';

const BOOT_LIMIT_MS = 180_000;
const SCRIPT_LIMIT_MS = 420_000;
const PASSPHRASE = 'correct horse stf4l';
const FIX = join(__dirname, '..', 'fixtures', 'boot-entries', 'bls', 'fedora-40', 'loader', 'entries');

let work = '';
let os: { vmlinuz: string; initrd: string };

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Case a: a Debian-style /boot with BLS entries (loader.conf picks the older one) and two initrds. */
function bootA(): Record<string, string> {
  const files: Record<string, string> = { 'loader/loader.conf': 'timeout 3\ndefault stf4l-6.1.0-17-amd64.conf\n', 'intel-ucode.img': 'ucode\n' };
  for (const v of ['6.1.0-17-amd64', '6.1.0-18-amd64']) {
    files[`loader/entries/stf4l-${v}.conf`] = [
      `title Debian GNU/Linux 12 (${v})`,
      `version ${v}`,
      `linux /vmlinuz-${v}`,
      'initrd /intel-ucode.img',
      `initrd /initrd.img-${v}`,
      `options root=/dev/mapper/stf4l-root ro quiet rd.luks.name=${v}`,
      '',
    ].join('\n');
    files[`vmlinuz-${v}`] = `kernel ${v}\n`;
    files[`initrd.img-${v}`] = `initrd ${v}\n`;
  }
  return files;
}

/** Case b: plain kernel pairs, as Debian's /boot without a boot loader config. */
function bootB(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const v of ['6.1.0-9-amd64', '6.1.0-18-amd64']) {
    files[`vmlinuz-${v}`] = `kernel ${v}\n`;
    files[`initrd.img-${v}`] = `initrd ${v}\n`;
    files[`config-${v}`] = '# CONFIG\n';
  }
  return files;
}

/** Case c: Fedora 40's BLS entries (real files), its rescue entry without a kernel. */
function bootC(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const n of readdirSync(FIX)) {
    files[`loader/entries/${n}`] = readFileSync(join(FIX, n), 'utf8');
    const v = /^[0-9a-f]{32}-(.*)\.conf$/.exec(n)![1]!;
    if (v === '0-rescue') continue;
    files[`vmlinuz-${v}`] = `kernel ${v}\n`;
    files[`initramfs-${v}.img`] = `initrd ${v}\n`;
  }
  return files;
}

const ROOT_FILES: PartitionSpec['files'] = { 'etc/fstab': '# root without kernels\n', 'etc/os-release': 'ID=stf4l\n' };

// The script the VM runs. set -u, and every setup step checked: a setup
// failure is reported as such, not as a failure of stiefelctl.
const RUN_SH = String.raw`#!/bin/sh
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
OUT=/tmp/stf4l-results
: > $OUT
LVMCFG='activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } backup { backup = 0 archive = 0 }'
finish() {
  dd if=$OUT of=/dev/vde bs=4096 conv=sync,fsync 2>/dev/null
  sync
  echo "STF4L-DONE $1"
  poweroff -f
}
step() {
  "$@" >/tmp/step.log 2>&1 || { echo "STF4L-SETUP-FAILED: $*"; cat /tmp/step.log; echo "setup-failed $*" >> $OUT; base64 -w0 /tmp/step.log >> $OUT; finish setup-failed; exit 1; }
}
lvmc() { cmd=$1; shift; lvm "$cmd" --config "$LVMCFG" "$@"; }
luks_format() {
  step cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /stf4l/pass "$1"
}

echo "STF4L: setting up the disks"
# a: LUKS2 → ext4 /boot
luks_format /dev/vda2
step cryptsetup open --key-file /stf4l/pass /dev/vda2 stf4l-mk-a
step dd if=/dev/vdd1 of=/dev/mapper/stf4l-mk-a bs=1M conv=fsync
step cryptsetup close stf4l-mk-a
# b: LVM on a partition
step lvmc pvcreate -y /dev/vdb2
step lvmc vgcreate stf4lb /dev/vdb2
step lvmc lvcreate -y -L 28M -n boot stf4lb
step lvmc lvcreate -y -l 100%FREE -n root stf4lb
step dd if=/dev/vdd2 of=/dev/stf4lb/boot bs=1M conv=fsync
step lvmc vgchange -an stf4lb
# c: LUKS2 → LVM PV → VG with a /boot LV
luks_format /dev/vdc2
step cryptsetup open --key-file /stf4l/pass /dev/vdc2 stf4l-mk-c
step lvmc pvcreate -y /dev/mapper/stf4l-mk-c
step lvmc vgcreate stf4lc /dev/mapper/stf4l-mk-c
step lvmc lvcreate -y -L 28M -n boot stf4lc
step lvmc lvcreate -y -l 100%FREE -n root stf4lc
step dd if=/dev/vdd3 of=/dev/stf4lc/boot bs=1M conv=fsync
step lvmc vgchange -an stf4lc
step cryptsetup close stf4l-mk-c
sync
for d in vda vdb vdc; do echo "setup-sha $d $(sha256sum /dev/$d | cut -d' ' -f1)" >> $OUT; done
echo "STF4L: disks ready, up $(cut -d' ' -f1 /proc/uptime) s"

# One stiefelctl run and what it left behind.
run_case() {
  name=$1; dev=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches
  before=$(sha256sum "$dev" | cut -d' ' -f1)
  t0=$(cut -d' ' -f1 /proc/uptime)
  stiefelctl boot-entries "$dev" --json "$@" >/tmp/out 2>/tmp/err
  rc=$?
  t1=$(cut -d' ' -f1 /proc/uptime)
  sync; echo 3 > /proc/sys/vm/drop_caches
  after=$(sha256sum "$dev" | cut -d' ' -f1)
  {
    echo "case $name"
    echo "rc $rc"
    echo "seconds $t0 $t1"
    echo "sha $before $after"
    echo "dm $(ls /sys/block | grep '^dm-' | tr '\n' ' ')"
    echo "mapper $(ls /dev/mapper | grep -v '^control$' | tr '\n' ' ')"
    echo "loops $(losetup -a | tr '\n' ' ')"
    echo "mounts $(grep stf4- /proc/mounts | tr '\n' ' ')"
    echo "active-lvs $(lvmc lvs --noheadings -o lv_full_name -S lv_active=active 2>/dev/null | tr -d ' ' | tr '\n' ' ')"
    echo "stdout $(base64 -w0 /tmp/out)"
    echo "stderr $(base64 -w0 /tmp/err)"
  } >> $OUT
  echo "STF4L-CASE $name rc=$rc in $t0..$t1 s"
}

run_case luks /dev/vda --passphrase-file /stf4l/pass
run_case lvm /dev/vdb --passphrase-file /stf4l/pass --cmdline 'root=/dev/mapper/stf4lb-root ro'
# The volume group in use already (as on the laptop's running OS): read, left active.
step lvmc vgchange -ay stf4lb
run_case lvm-in-use /dev/vdb --cmdline 'root=/dev/mapper/stf4lb-root ro'
step lvmc vgchange -an stf4lb
run_case luks-lvm /dev/vdc --passphrase-file /stf4l/pass
run_case luks-wrong /dev/vda --passphrase-file /stf4l/wrong
run_case luks-lvm-wrong /dev/vdc --passphrase-file /stf4l/wrong
# The same disk as an image file (loop devices over a file, not a block device).
dd if=/dev/vdc of=/tmp/laptop.img bs=1M 2>/dev/null
run_case luks-lvm-file /tmp/laptop.img --passphrase-file /stf4l/pass
finish ok
`;

interface CaseResult {
  rc: number;
  seconds: number;
  sha: [string, string];
  dm: string;
  mapper: string;
  loops: string;
  mounts: string;
  activeLvs: string;
  stdout: string;
  stderr: string;
}

function parseResults(text: string): { setup: Map<string, string>; cases: Map<string, CaseResult>; setupFailed: string | null } {
  const setup = new Map<string, string>();
  const cases = new Map<string, CaseResult>();
  let current: CaseResult | null = null;
  let setupFailed: string | null = null;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const sp = line.indexOf(' ');
    const key = sp < 0 ? line : line.slice(0, sp);
    const value = sp < 0 ? '' : line.slice(sp + 1).trim();
    const b64 = (v: string) => Buffer.from(v, 'base64').toString('utf8');
    if (key === 'setup-failed') setupFailed = `${value}\n${b64(lines[i + 1] ?? '')}`;
    else if (key === 'setup-sha') setup.set(value.split(' ')[0]!, value.split(' ')[1]!);
    else if (key === 'case') {
      current = { rc: NaN, seconds: NaN, sha: ['', ''], dm: '', mapper: '', loops: '', mounts: '', activeLvs: '', stdout: '', stderr: '' };
      cases.set(value, current);
    } else if (current) {
      if (key === 'rc') current.rc = Number(value);
      else if (key === 'seconds') current.seconds = Number(value.split(' ')[1]) - Number(value.split(' ')[0]);
      else if (key === 'sha') current.sha = value.split(' ') as [string, string];
      else if (key === 'dm') current.dm = value;
      else if (key === 'mapper') current.mapper = value;
      else if (key === 'loops') current.loops = value;
      else if (key === 'mounts') current.mounts = value;
      else if (key === 'active-lvs') current.activeLvs = value;
      else if (key === 'stdout') current.stdout = b64(value);
      else if (key === 'stderr') current.stderr = b64(value);
    }
  }
  return { setup, cases, setupFailed };
}

let results: ReturnType<typeof parseResults>;
const disks: Record<'vda' | 'vdb' | 'vdc', string> = { vda: '', vdb: '', vdc: '' };
let vmSeconds = 0;

function entry(id: string, title: string, version: string, kernel: string, initrds: string[], cmdline: string | null, source: string, partition: string, isDefault: boolean) {
  return { id, title, version, kernel, initrds, cmdline, source, partition, default: isDefault };
}

/** A run that worked: exit 0 and nothing left behind. */
function clean(name: string): CaseResult {
  const r = results.cases.get(name);
  assert.ok(r, `the VM did not report the case ${name}`);
  assert.equal(r.sha[0].length, 64, `${name}: no sha256 before`);
  assert.equal(r.sha[1], r.sha[0], `${name}: the disk changed`);
  assert.equal(r.dm, '', `${name}: device-mapper devices left: ${r.dm}`);
  assert.equal(r.mapper, '', `${name}: /dev/mapper entries left: ${r.mapper}`);
  assert.equal(r.loops, '', `${name}: loop devices left: ${r.loops}`);
  assert.equal(r.mounts, '', `${name}: mounts left: ${r.mounts}`);
  assert.equal(r.activeLvs, '', `${name}: logical volumes left active: ${r.activeLvs}`);
  return r;
}

before(async () => {
  requireRoot();
  for (const t of ['qemu-system-x86_64', 'sfdisk', 'mke2fs', 'mkfs.vfat', 'mcopy']) requireTool(t);
  work = mkdtempSync(join(tmpdir(), 'stf4l-vm-'));
  os = await stiefelOsImage(E2E_CACHE_DIR, (l) => console.log(`# ${l}`));
  disks.vda = buildDiskImage(join(work, 'a.img'), {
    scheme: 'gpt',
    partitions: [{ sizeMiB: 1 }, { sizeMiB: 48, type: 'luks' }, { sizeMiB: 8, fs: 'ext4', files: ROOT_FILES }],
  }).path;
  disks.vdb = buildDiskImage(join(work, 'b.img'), {
    scheme: 'mbr',
    partitions: [{ sizeMiB: 8, fs: 'ext4', files: ROOT_FILES }, { sizeMiB: 40, type: 'lvm' }],
  }).path;
  disks.vdc = buildDiskImage(join(work, 'c.img'), {
    scheme: 'gpt',
    partitions: [{ sizeMiB: 8, type: 'esp', fs: 'vfat', files: { 'EFI/BOOT/BOOTX64.EFI': 'not a boot loader\n' } }, { sizeMiB: 64, type: 'luks' }],
  }).path;
  const boots = buildDiskImage(join(work, 'boots.img'), {
    scheme: 'gpt',
    partitions: [
      { sizeMiB: 24, fs: 'ext4', label: 'boot-a', files: bootA() },
      { sizeMiB: 24, fs: 'ext4', label: 'boot-b', files: bootB() },
      { sizeMiB: 24, fs: 'ext4', label: 'boot-c', files: bootC() },
    ],
  }).path;
  const resultsDisk = join(work, 'results.img');
  const fd = openSync(resultsDisk, 'w');
  ftruncateSync(fd, 4 * 1024 * 1024);
  closeSync(fd);

  const overlay = encodeNewc([
    { type: 'dir', path: 'stf4l', mode: 0o755 },
    { type: 'file', path: 'stf4l/run.sh', data: Buffer.from(RUN_SH), mode: 0o755 },
    { type: 'file', path: 'stf4l/pass', data: Buffer.from(PASSPHRASE), mode: 0o600 },
    { type: 'file', path: 'stf4l/wrong', data: Buffer.from('not the passphrase'), mode: 0o600 },
  ]);
  const initrd = join(work, 'initrd.img');
  await initrdWithOverlay(os.initrd, overlay, initrd);

  const started = Date.now();
  await withVms(
    [
      {
        name: 'stf4l-luks-lvm',
        kernel: os.vmlinuz,
        initrd,
        // quiet: kernel messages would interleave with the shell's output.
        append: 'console=ttyS0 quiet panic=-1',
        memoryMiB: 1024,
        disks: [
          { path: disks.vda },
          { path: disks.vdb },
          { path: disks.vdc },
          { path: boots, readOnly: true },
          { path: resultsDisk },
        ],
      },
    ],
    async ([vm]) => {
      await vm!.waitFor(/starting a rescue shell on the console/, BOOT_LIMIT_MS);
      vm!.send('sh /stf4l/run.sh\n');
      const done = await vm!.waitFor(/STF4L-DONE (\S+)\r?\n/, SCRIPT_LIMIT_MS);
      await vm!.waitForExit(60_000);
      const text = readFileSync(resultsDisk, 'utf8').replace(/\0+$/, '');
      results = parseResults(text);
      assert.equal(done[1], 'ok', `the VM's setup failed: ${results.setupFailed}\n${vm!.tail(30)}`);
    },
  );
  vmSeconds = (Date.now() - started) / 1000;
  console.log(`# VM run: ${vmSeconds.toFixed(1)} s; stiefelctl runs: ${[...results.cases].map(([n, r]) => `${n} ${r.seconds.toFixed(1)} s`).join(', ')}`);
  // What a user sees on stderr in each case, for the test log.
  for (const [n, r] of results.cases) for (const l of r.stderr.trim().split('\n').filter(Boolean)) console.log(`# ${n}: ${l}`);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the disks the VM made are what stiefelctl read, and no run wrote to them', () => {
  // The VM's own sha256 after setting up equals the image file's now: every
  // later byte read by stiefelctl came from, and left, exactly this disk.
  for (const d of ['vda', 'vdb', 'vdc'] as const) assert.equal(sha(disks[d]), results.setup.get(d), `${d}: the image file differs from what the VM hashed`);
});

test('LUKS2 partition holding an ext4 /boot with BLS entries: opened read-only, entries found, closed again', () => {
  const r = clean('luks');
  assert.equal(r.rc, 0, r.stderr);
  const part = '/dev/vda2';
  const bls = (v: string, isDefault: boolean) =>
    entry(`stf4l-${v}.conf`, `Debian GNU/Linux 12 (${v})`, v, `/vmlinuz-${v}`, ['/intel-ucode.img', `/initrd.img-${v}`], `root=/dev/mapper/stf4l-root ro quiet rd.luks.name=${v}`, 'bls', part, isDefault);
  assert.deepEqual(JSON.parse(r.stdout), [
    bls('6.1.0-17-amd64', true),
    bls('6.1.0-18-amd64', false),
    // Kernel pairs put the microcode image first, as Debian's grub does.
    entry('vmlinuz-6.1.0-18-amd64', 'Linux 6.1.0-18-amd64', '6.1.0-18-amd64', '/vmlinuz-6.1.0-18-amd64', ['/intel-ucode.img', '/initrd.img-6.1.0-18-amd64'], null, 'kernel-pair', part, false),
    entry('vmlinuz-6.1.0-17-amd64', 'Linux 6.1.0-17-amd64', '6.1.0-17-amd64', '/vmlinuz-6.1.0-17-amd64', ['/intel-ucode.img', '/initrd.img-6.1.0-17-amd64'], null, 'kernel-pair', part, false),
  ]);
  assert.match(r.stderr, /^not searched: \/dev\/vda1 /m, 'the empty first partition is reported');
});

function lvmEntries() {
  const part = '/dev/stf4lb/boot';
  const cmdline = 'root=/dev/mapper/stf4lb-root ro';
  return [
    entry('vmlinuz-6.1.0-18-amd64', 'Linux 6.1.0-18-amd64', '6.1.0-18-amd64', '/vmlinuz-6.1.0-18-amd64', ['/initrd.img-6.1.0-18-amd64'], cmdline, 'kernel-pair', part, true),
    entry('vmlinuz-6.1.0-9-amd64', 'Linux 6.1.0-9-amd64', '6.1.0-9-amd64', '/vmlinuz-6.1.0-9-amd64', ['/initrd.img-6.1.0-9-amd64'], cmdline, 'kernel-pair', part, false),
  ];
}

test('LVM volume group on an MBR partition with a /boot LV: activated read-only, kernel pairs found, deactivated', () => {
  const r = clean('lvm');
  assert.equal(r.rc, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), lvmEntries());
});

test('a volume group active already (the laptop\'s running OS): read as it is and left active, not pulled away', () => {
  const r = results.cases.get('lvm-in-use');
  assert.ok(r, 'the VM did not report the case lvm-in-use');
  assert.equal(r.rc, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), lvmEntries());
  assert.match(r.stderr, /volume group stf4lb is active on this machine already/);
  assert.equal(r.sha[1], r.sha[0], 'the disk changed');
  assert.equal(r.activeLvs, 'stf4lb/boot stf4lb/root', 'the volumes active before are active after');
  assert.equal(r.mapper, 'stf4lb-boot stf4lb-root', 'only the volume group\'s own mappings');
  assert.equal(r.loops, '', `loop devices left: ${r.loops}`);
  assert.equal(r.mounts, '', `mounts left: ${r.mounts}`);
});

function fedoraEntries(part: string) {
  const id = '3a9c1e5f0b2d4e7a8c6b1d0e2f4a6b8c';
  const opts = 'root=/dev/mapper/vg0-root ro rd.lvm.lv=vg0/root rd.lvm.lv=vg0/swap console=tty0 console=ttyS0,115200n8 crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M';
  const bls = (v: string, isDefault: boolean) => entry(`${id}-${v}.conf`, `Fedora Linux (${v}) 40 (Server Edition)`, v, `/vmlinuz-${v}`, [`/initramfs-${v}.img`], opts, 'bls', part, isDefault);
  const pair = (v: string) => entry(`vmlinuz-${v}`, `Linux ${v}`, v, `/vmlinuz-${v}`, [`/initramfs-${v}.img`], null, 'kernel-pair', part, false);
  return [bls('6.10.6-200.fc40.x86_64', true), bls('6.9.12-200.fc40.x86_64', false), pair('6.10.6-200.fc40.x86_64'), pair('6.9.12-200.fc40.x86_64')];
}

test('LUKS2 holding an LVM PV whose VG has a /boot LV (full-disk encryption): Fedora BLS entries found, all closed again', () => {
  const r = clean('luks-lvm');
  assert.equal(r.rc, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), fedoraEntries('/dev/stf4lc/boot'));
  assert.match(r.stderr, /skipped \[bls\] \/dev\/stf4lc\/boot: .*0-rescue\.conf.*is missing/);
});

test('the same full-disk-encryption disk as an image file: loop devices over the file, same entries, nothing left', () => {
  const r = clean('luks-lvm-file');
  assert.equal(r.rc, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), fedoraEntries('/dev/stf4lc/boot'));
});

test('a wrong passphrase: one clear error line, exit status 1, nothing left open', () => {
  for (const name of ['luks-wrong', 'luks-lvm-wrong']) {
    const r = clean(name);
    assert.equal(r.rc, 1, `${name}: ${r.stderr}`);
    assert.equal(r.stdout, '', `${name}: printed entries`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${name}: more than one line on stderr:\n${r.stderr}`);
    assert.match(lines[0]!, /^stiefelctl boot-entries: the passphrase in \/stf4l\/wrong does not open \/dev\/vd[ac]2 \(LUKS\)/);
  }
});
