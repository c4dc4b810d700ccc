// `stiefelctl create-usbdrive` as a user runs it (the bundled CLI, root),
// its sticks checked by the real tools: sgdisk -v, fdisk -l, fsck.vfat -n,
// mdir/mtype/mcopy for the files, and the bytes of the boot code. Targets:
// image files, and loop devices as whole disks (refused while mounted, as a
// partition, without root; written when free; interrupted halfway).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfigText } from '../../src/config';
import { programSearchDirs } from '../../src/image/programs';
import { findBootFiles } from '../../src/usbdrive/boot-files';
import { fsckFindings } from '../../src/usbdrive/esp';
import { decodeFatBootSector } from '../../src/usbdrive/fat';
import { FAT32_MIN_CLUSTERS, MiB, fat32Geometry } from '../../src/usbdrive/layout';
import { ESP_PATHS, loaderConf, loaderEntry, loaderEntryFileName, stickMenu, syslinuxConfig } from '../../src/usbdrive/menu';
import { readInitrdFacts } from '../../src/usbdrive/stiefelos';
import { openDiskExclusive } from '../../src/usbdrive/writer';
import { cliPath, runCli, CLI } from '../helpers/cli';
import { debianKernel } from '../helpers/kernel';
import { requireRoot, requireTool } from '../helpers/tools';

const KERNEL = debianKernel().path;
const APPEND = 'quiet stiefel_test.disk=1';
let work = '';
let config = '';
let stick = '';
let imageDir = '';
const loops: string[] = [];
const mounts: string[] = [];

const sh = (file: string, args: string[]): string => execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const mtoolsImage = (img: string): string => `${img}@@${MiB}`;
const mtype = (img: string, path: string): string => sh('mtype', ['-i', mtoolsImage(img), `::${path}`]);
function mcopyOut(img: string, path: string, to: string): string {
  sh('mcopy', ['-i', mtoolsImage(img), '-n', `::${path}`, to]);
  return to;
}
function readBytes(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}
function losetup(backing: string): string {
  const dev = sh('losetup', ['-f', '--show', backing]).trim();
  loops.push(dev);
  return dev;
}
/** No terminal (a new session): the question cannot be asked, as in a script or a pipe. */
const noTty = { detached: true };

before(async () => {
  requireRoot();
  for (const t of ['sgdisk', 'fdisk', 'fsck.vfat', 'mkfs.vfat', 'mdir', 'mtype', 'mcopy', 'syslinux', 'losetup', 'partx', 'mke2fs', 'mount', 'umount', 'setpriv', 'zstd', 'findmnt', 'lsblk']) requireTool(t);
  cliPath();
  work = mkdtempSync(join(tmpdir(), 'stf13-disk-'));
  config = join(work, 'config.yaml');
  const r = await runCli(['init', '--config', config]);
  assert.equal(r.code, 0, r.stderr);
  // The template's client section ends with its cmdline_append (the server has one too).
  const text = readFileSync(config, 'utf8');
  const at = text.lastIndexOf('  cmdline_append: ""');
  writeFileSync(config, `${text.slice(0, at)}  cmdline_append: "${APPEND}"${text.slice(at + '  cmdline_append: ""'.length)}`);
  assert.equal(parseConfigText(readFileSync(config, 'utf8'), config).client.cmdlineAppend, APPEND);
});

after(() => {
  for (const m of mounts.reverse()) execFileSync('umount', [m], { stdio: 'ignore' });
  for (const l of loops) {
    try {
      execFileSync('losetup', ['-d', l], { stdio: 'ignore' });
    } catch {
      /* gone */
    }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test('an image file built here, stiefelOS included: every tool finds what the layout promises', { timeout: 180_000 }, async () => {
  stick = join(work, 'stick.img');
  const started = Date.now();
  const r = await runCli(['create-usbdrive', stick, '--config', config, '--kernel', KERNEL]);
  const seconds = (Date.now() - started) / 1000;
  assert.equal(r.code, 0, r.stderr);
  console.log(`# create-usbdrive, building stiefelOS: ${seconds.toFixed(1)} s; stick ${statSync(stick).size} bytes`);
  assert.match(r.stdout, /^stick on the image file .*stick\.img \(\d+ MiB, mode 0600\), GPT:$/m);
  assert.equal(r.stderr.split('\n').filter((l) => /key to the laptop's disk/.test(l)).length, 1, 'the secret is mentioned once');
  assert.equal(statSync(stick).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(work).filter((n) => n.includes('.tmp-')), []);

  // The partition table, as sgdisk and fdisk read it.
  assert.match(sh('sgdisk', ['-v', stick]), /No problems found/);
  const info = sh('sgdisk', ['-i', '1', stick]);
  assert.match(info, /Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B \(EFI system partition\)/);
  assert.match(info, /First sector: 2048 /);
  assert.match(info, /Attribute flags: 0000000000000004/, 'legacy BIOS bootable, nothing else');
  const fdisk = sh('fdisk', ['-l', stick]);
  assert.match(fdisk, /Disklabel type: gpt/);
  assert.match(fdisk, /stick\.img1 +2048 +\d+ +\d+ +\d+M EFI System/);
  const lastSector = Number(/Last sector: (\d+)/.exec(info)![1]);

  // BIOS boot code: syslinux's gptmbr.bin, as this host packages it.
  const boot = await findBootFiles(programSearchDirs(process.env.PATH));
  assert.ok(readBytes(stick, 0, 440).equals(readFileSync(boot.gptmbr)));

  // The ESP on its own: fsck.vfat, and the boot sector fields that make it boot.
  const esp = join(work, 'esp.img');
  sh('dd', [`if=${stick}`, `of=${esp}`, 'bs=512', 'skip=2048', `count=${lastSector - 2048 + 1}`, 'status=none']);
  const fsck = sh('fsck.vfat', ['-n', esp]);
  assert.deepEqual(fsckFindings(fsck), [], fsck);
  const bs = decodeFatBootSector(readBytes(esp, 0, 512));
  assert.ok(!('problem' in bs));
  assert.equal(bs.hiddenSectors, 2048, 'BPB_HiddSec: where the partition starts');
  assert.equal(bs.totalSectors, lastSector - 2048 + 1);
  assert.ok(bs.clusters >= FAT32_MIN_CLUSTERS);
  assert.equal(bs.volumeLabel.trim(), 'STIEFEL');
  assert.ok(readBytes(esp, bs.backupBootSector * 512, 512).equals(readBytes(esp, 0, 512)), 'the backup boot sector matches');

  // The files.
  assert.match(sh('mdir', ['-i', mtoolsImage(stick), '::/EFI/BOOT']), /BOOTX64 +EFI/);
  // ldlinux.sys and ldlinux.c32 are hidden system files: -a lists them.
  assert.match(sh('mdir', ['-a', '-i', mtoolsImage(stick), '::/syslinux']), /ldlinux +sys/i);
  const menu = stickMenu({ cmdlineAppend: APPEND });
  assert.equal(mtype(stick, ESP_PATHS.syslinuxCfg), syslinuxConfig(menu));
  assert.equal(mtype(stick, ESP_PATHS.loaderConf), loaderConf(menu));
  menu.forEach((e, i) => assert.equal(mtype(stick, `${ESP_PATHS.loaderEntries}/${loaderEntryFileName(e, i)}`), loaderEntry(e, i)));
  const out = join(work, 'out');
  mkdirSync(out);
  assert.equal(sha(mcopyOut(stick, ESP_PATHS.efiBoot, join(out, 'BOOTX64.EFI'))), sha(boot.systemdBoot));
  // ldlinux.c32 comes from the installer (matching its ldlinux.sys), the menu modules from the package.
  assert.match(sh('mdir', ['-a', '-i', mtoolsImage(stick), '::/syslinux']), /ldlinux +c32/i);
  for (const m of ['menu.c32', 'libutil.c32']) assert.equal(sha(mcopyOut(stick, `/syslinux/${m}`, join(out, m))), sha(boot.syslinuxModules.get(m)!));
  assert.equal(sha(mcopyOut(stick, ESP_PATHS.kernel, join(out, 'vmlinuz'))), sha(KERNEL));

  // stiefelOS inside: its config points at its secret, which is the config's.
  const initrd = mcopyOut(stick, ESP_PATHS.initrd, join(out, 'initrd.img'));
  const facts = await readInitrdFacts(initrd);
  assert.ok(facts.files.get('etc/stiefelsystem/secret')!.equals(readFileSync(join(work, 'secret'))));
  const inner = facts.files.get('etc/stiefelsystem/config.yaml')!.toString('utf8');
  const innerConfig = parseConfigText(inner, '/etc/stiefelsystem/config.yaml');
  assert.equal(innerConfig.secret, '/etc/stiefelsystem/secret');
  assert.equal(innerConfig.client.cmdlineAppend, APPEND);
  imageDir = out;
});

test('--image, --size, --dry-run, and a file that exists already', { timeout: 120_000 }, async () => {
  assert.ok(imageDir, 'needs the first test');
  const sized = join(work, 'sized.img');
  let r = await runCli(['create-usbdrive', sized, '--config', config, '--image', imageDir, '--size', '200M']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(statSync(sized).size, 200 * MiB);
  assert.match(sh('sgdisk', ['-v', sized]), /No problems found/);
  assert.match(sh('sgdisk', ['-i', '1', sized]), /Last sector: 407551 /, 'the ESP fills the file up to the last MiB');

  // Too small: one line naming a size that works; no file, no temporary file.
  const small = join(work, 'small.img');
  r = await runCli(['create-usbdrive', small, '--config', config, '--image', imageDir, '--size', '20M']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /\nstiefelctl create-usbdrive: --size 20 MiB is too small: the files need a stick of at least \d+ MiB \(see 'stiefelctl create-usbdrive --help'\)\n$/);
  assert.equal(existsSync(small), false);

  // Dry run: the layout, nothing written.
  const dry = join(work, 'dry.img');
  r = await runCli(['create-usbdrive', dry, '--config', config, '--image', imageDir, '--dry-run']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /partition 1: EFI system partition, FAT32 'STIEFEL', legacy BIOS bootable/);
  assert.match(r.stdout, new RegExp(`\\* client  console=ttyS0,115200 console=tty0 stiefel\\.role=client ${APPEND}`));
  assert.match(r.stderr, /dry run: nothing was written/);
  assert.equal(existsSync(dry), false);

  // An existing file is only replaced when asked; without a terminal that takes --yes.
  const before = sha(sized);
  r = await runCli(['create-usbdrive', sized, '--config', config, '--image', imageDir], noTty);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no terminal to ask on: pass --yes to write .*sized\.img, or --dry-run to only look/);
  assert.equal(sha(sized), before);
  r = await runCli(['create-usbdrive', sized, '--config', config, '--image', imageDir, '--yes'], noTty);
  assert.equal(r.code, 0, r.stderr);
  assert.notEqual(sha(sized), before, 'replaced (new GUIDs and volume ID)');
  assert.deepEqual(readdirSync(work).filter((n) => n.includes('.tmp-')), []);
});

test('a loop device: refused while mounted (and the kernel refuses O_EXCL), as a partition and without root; written when free', { timeout: 120_000 }, async () => {
  assert.ok(imageDir, 'needs the first test');
  const backing = join(work, 'loop.img');
  execFileSync('truncate', ['-s', '256M', backing]);
  const dev = losetup(backing);
  // Mounted: lsblk's view refuses it, naming the fix; the bytes stay as they are.
  sh('mke2fs', ['-q', '-F', '-t', 'ext4', dev]);
  const mnt = join(work, 'mnt');
  mkdirSync(mnt);
  sh('mount', [dev, mnt]);
  mounts.push(mnt);
  const hash = sha(backing);
  let r = await runCli(['create-usbdrive', dev, '--config', config, '--image', imageDir, '--yes']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `stiefelctl create-usbdrive: refusing to write ${dev}: ${dev} is mounted on ${mnt}: unmount it first (umount ${mnt})\n`);
  await assert.rejects(openDiskExclusive(dev), /is in use \(a mounted file system, swap, LVM, LUKS or RAID holds it\)/);
  assert.equal(sha(backing), hash);
  sh('umount', [mnt]);
  mounts.pop();

  // Not root: one line, before anything is read or built.
  r = await runCli(['create-usbdrive', dev, '--config', config, '--image', imageDir, '--yes'], { uid: 65534, gid: 65534 });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `stiefelctl create-usbdrive: writing the disk ${dev} needs root: run it with sudo (or write an image file and copy that)\n`);

  // Free: written, with the backup GPT at the end of the device and the rest unallocated.
  r = await runCli(['create-usbdrive', dev, '--config', config, '--image', imageDir, '--yes']);
  assert.equal(r.code, 0, r.stderr);
  for (const line of ['wiping the old partition table', 'writing ', 'verifying ', 'writing the partition table, last', `wrote and checked`]) assert.ok(r.stderr.includes(line), line);
  assert.match(r.stdout, /left unallocated/);
  const v = sh('sgdisk', ['-v', backing]);
  assert.match(v, /No problems found/);
  assert.match(sh('sgdisk', ['-p', backing]), /Disk .*: 524288 sectors/);
  assert.ok(readBytes(backing, 0, 440).equals(readFileSync((await findBootFiles(programSearchDirs(process.env.PATH))).gptmbr)));
  assert.equal(mtype(backing, ESP_PATHS.syslinuxCfg), syslinuxConfig(stickMenu({ cmdlineAppend: APPEND })));
  // The old ext4 is gone: nothing but our ESP is recognisable.
  assert.doesNotMatch(sh('lsblk', ['-n', '-o', 'FSTYPE', dev]), /ext4/);

  // A partition of it as TARGET: refused, naming the whole disk. (The writer
  // asked the kernel to re-read the table; where loop devices do not scan
  // partitions, partx adds it.)
  const part = `${dev}p1`;
  if (!existsSync(part)) sh('partx', ['-a', dev]);
  try {
    assert.ok(existsSync(part), `${part} appeared`);
    r = await runCli(['create-usbdrive', part, '--config', config, '--image', imageDir, '--yes']);
    assert.equal(r.code, 2);
    assert.equal(r.stderr, `stiefelctl create-usbdrive: ${part} is partition 1 of ${dev}: give the whole disk, ${dev} (the stick gets a new partition table) (see 'stiefelctl create-usbdrive --help')\n`);
  } finally {
    sh('partx', ['-d', dev]);
  }
});

test("the disk holding this machine's root file system is refused, even for a dry run", async () => {
  assert.ok(imageDir, 'needs the first test');
  const source = sh('findmnt', ['-n', '-o', 'SOURCE', '/']).trim();
  // The whole disk under the root file system (itself when it has no partitions).
  const parent = sh('lsblk', ['-n', '-d', '-o', 'PKNAME', source]).trim();
  const disk = parent ? `/dev/${parent}` : source;
  if (!/^\/dev\//.test(disk) || !statSync(disk).isBlockDevice()) {
    throw new Error(`the root file system's source ${source} is not a block device here: this test needs one`);
  }
  const r = await runCli(['create-usbdrive', disk, '--config', config, '--image', imageDir, '--dry-run']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^stiefelctl create-usbdrive: refusing to write ${disk}: .*holds the running system's root file system: choose another disk`));
});

test('interrupted while writing: no partition table left, and one line says so', { timeout: 120_000 }, async () => {
  assert.ok(imageDir, 'needs the first test');
  const backing = join(work, 'big.img');
  execFileSync('truncate', ['-s', '1536M', backing]);
  // An old stick's table, which must not survive as a half-written one.
  sh('sgdisk', ['-n', '1:2048:+100M', '-t', '1:ef00', backing]);
  const dev = losetup(backing);
  const child = spawn(process.execPath, [CLI, 'create-usbdrive', dev, '--config', config, '--image', imageDir, '--size', '1G', '--yes'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let sent = false;
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (!sent && stderr.includes('wiping the old partition table')) {
      sent = true;
      child.kill('SIGINT');
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  assert.ok(sent, stderr);
  assert.equal(code, 1, stderr);
  assert.match(stderr.trim().split('\n').at(-1)!, new RegExp(`^stiefelctl create-usbdrive: interrupted: ${dev} holds no partition table now, so it boots nowhere; run the command again$`));
  assert.ok(readBytes(backing, 0, MiB).equals(Buffer.alloc(MiB)), 'no MBR and no primary GPT');
  assert.ok(readBytes(backing, 1536 * MiB - MiB, MiB).equals(Buffer.alloc(MiB)), 'no backup GPT');
});

test("the FAT32 arithmetic is a lower bound of what mkfs.vfat makes, at every cluster size the stick uses", () => {
  for (const mib of [40, 84, 300, 511, 512, 1024, 4096]) {
    const f = join(work, `fat-${mib}.img`);
    execFileSync('truncate', ['-s', `${mib}M`, f]);
    const g = fat32Geometry(mib * MiB);
    sh('mkfs.vfat', ['-F', '32', '-S', '512', '-s', String(g.clusterBytes / 512), '-R', '32', '-f', '2', '-g', '64/32', '-h', '2048', '--mbr=n', f]);
    const d = decodeFatBootSector(readBytes(f, 0, 512));
    assert.ok(!('problem' in d));
    assert.equal(d.totalSectors, mib * 2048, `${mib} MiB: the file system fills the partition`);
    assert.ok(d.clusters >= g.clusters, `${mib} MiB: mkfs made ${d.clusters} clusters, the arithmetic promised ${g.clusters}`);
    assert.ok((d.clusters - g.clusters) / d.clusters < 0.001, `${mib} MiB: the bound is close (${d.clusters} vs ${g.clusters})`);
    assert.ok(d.clusters >= FAT32_MIN_CLUSTERS);
    rmSync(f);
  }
});
