// `stiefelctl boot-entries` on real GPT and MBR disk images with ext4
// partitions, one per layout, through the bundled CLI: loop devices by
// offset, read-only mounts, and afterwards nothing mounted, nothing attached,
// and the image's bytes unchanged, also when interrupted with SIGINT.
// FAT/ESP layouts are tested as directories (this kernel has no vfat).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, cliPath } from '../helpers/cli';
import { requireRoot, requireTool } from '../helpers/tools';
import { buildDiskImage, buildUki } from '../helpers/disk-image';
import { findBootEntries } from '../../src/boot-entries/find';
import { encodeNewc } from '../../src/cpio/newc';
import { debianKernel } from '../helpers/kernel';

const FIX = join(__dirname, '..', 'fixtures', 'boot-entries');
const KERNEL = debianKernel().path;
const DEBIAN_UUID = '2f3a1c9e-5b7d-4e21-9a60-3c1b8d2e7f45';
let dir = '';

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
const fixture = (p: string) => readFileSync(join(FIX, p), 'utf8');
// The release the recorded grub.cfg fixture boots, read from it (its files are made to match).
const GRUB_RELEASE = /linux\t\/boot\/vmlinuz-(\S+)/.exec(fixture('grub/debian-12-grub.cfg'))![1]!;
// Made-up kernels in made-up images, compared with nothing on the host.
const UKI_RELEASE = '6.1.0-56-amd64'; // made-up release: the UKI's .uname
const OLD = '6.1.0-9-amd64'; // made-up release
const NEW = '6.1.0-18-amd64'; // made-up release

function ourMounts(): string[] {
  return execFileSync('findmnt', ['-rn', '-o', 'TARGET'], { encoding: 'utf8' }).split('\n').filter((t) => t.includes('/stf4-'));
}
function loopsOn(image: string): string {
  return execFileSync('losetup', ['-j', image], { encoding: 'utf8' }).trim();
}
function ourTempDirs(): string[] {
  return readdirSync(tmpdir()).filter((n) => /^stf4-[A-Za-z0-9]{6}$/.test(n));
}

/** Runs the CLI on `image` and checks it left no trace: mounts, loops, temp dirs, changed bytes. */
async function runClean(image: string, args: string[] = ['--json']) {
  const hash = sha(image);
  const tempBefore = ourTempDirs();
  const r = await runCli(['boot-entries', image, ...args]);
  assert.deepEqual(ourMounts(), [], 'something is still mounted');
  assert.equal(loopsOn(image), '', 'a loop device is still attached');
  assert.deepEqual(ourTempDirs(), tempBefore, 'a mount point directory was left behind');
  assert.equal(sha(image), hash, 'the image changed');
  return r;
}

before(() => {
  requireRoot();
  for (const t of ['losetup', 'mount', 'umount', 'findmnt', 'sfdisk', 'mke2fs', 'objcopy']) requireTool(t);
  cliPath();
  dir = mkdtempSync(join(tmpdir(), 'stf4-disk-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('GPT, Debian grub.cfg on an ext4 root: grub default first, $root found by file system UUID', async () => {
  const img = buildDiskImage(join(dir, 'debian.img'), {
    scheme: 'gpt',
    partitions: [
      { sizeMiB: 4, type: 'esp', fs: 'vfat', files: { 'EFI/debian/grub.cfg': "search.fs_uuid x root\nconfigfile $prefix/grub.cfg\n" } },
      { sizeMiB: 12, fs: 'ext4', uuid: DEBIAN_UUID, files: { 'boot/grub/grub.cfg': fixture('grub/debian-12-grub.cfg'), [`boot/vmlinuz-${GRUB_RELEASE}`]: 'kernel', [`boot/initrd.img-${GRUB_RELEASE}`]: 'initrd', 'etc/fstab': '' } },
    ],
  });
  const r = await runClean(img.path);
  assert.equal(r.code, 0, r.stderr);
  const entries = JSON.parse(r.stdout) as Record<string, unknown>[];
  assert.deepEqual(entries[0], {
    id: `gnulinux-simple-${DEBIAN_UUID}`,
    title: 'Debian GNU/Linux',
    version: GRUB_RELEASE,
    kernel: `/boot/vmlinuz-${GRUB_RELEASE}`,
    initrds: [`/boot/initrd.img-${GRUB_RELEASE}`],
    cmdline: 'root=/dev/vda2 ro quiet',
    source: 'grub',
    partition: `${img.path}#2`,
    default: true,
  });
  assert.deepEqual(entries.map((e) => e.source), ['grub', 'grub', 'grub', 'kernel-pair']);
  // The ESP could not be mounted here (no vfat): said on stderr, not fatal.
  assert.match(r.stderr, /not searched: .*debian\.img#1 \(vfat\)/);
});

test('GPT, BootLoaderSpec entries and a real UKI on an ext4 partition; UKI bytes extracted from the image', async () => {
  const initrd = join(dir, 'uki-initrd.cpio');
  writeFileSync(initrd, encodeNewc([{ type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 }]));
  const ukiPath = join(dir, 'fedora.efi');
  buildUki(ukiPath, { kernel: KERNEL, initrd, cmdline: 'root=UUID=abc ro', osRelease: 'NAME=Fedora\nID=fedora\nVERSION_ID=40\nPRETTY_NAME="Fedora Linux 40"\n', uname: UKI_RELEASE });
  const files: Record<string, string | Uint8Array> = { 'EFI/Linux/fedora-6.1.efi': readFileSync(ukiPath) };
  for (const n of readdirSync(join(FIX, 'bls', 'fedora-40', 'loader', 'entries'))) {
    files[`loader/entries/${n}`] = fixture(`bls/fedora-40/loader/entries/${n}`);
    const v = /^[0-9a-f]{32}-(.*)\.conf$/.exec(n)![1]!;
    if (v === '0-rescue') continue; // its kernel is missing: skipped with a reason
    files[`vmlinuz-${v}`] = `kernel ${v}`;
    files[`initramfs-${v}.img`] = `initrd ${v}`;
  }
  const img = buildDiskImage(join(dir, 'fedora.img'), { scheme: 'gpt', partitions: [{ sizeMiB: 24, type: 'xbootldr', fs: 'ext4', files }] });
  const r = await runClean(img.path);
  assert.equal(r.code, 0, r.stderr);
  const entries = JSON.parse(r.stdout) as { source: string; version: string; default: boolean; kernel: string }[];
  assert.deepEqual(entries.map((e) => [e.source, e.version, e.default]), [
    ['bls', '6.10.6-200.fc40.x86_64', true],
    ['bls', '6.9.12-200.fc40.x86_64', false],
    ['uki', UKI_RELEASE, false],
    ['kernel-pair', '6.10.6-200.fc40.x86_64', false],
    ['kernel-pair', '6.9.12-200.fc40.x86_64', false],
  ]);
  assert.match(r.stderr, /skipped \[bls\].*0-rescue.conf.*kernel \/vmlinuz-0-rescue-\S+ is missing/);

  // Through the library: the UKI's sections read from the mounted image equal the originals.
  const hash = sha(img.path);
  const scan = await findBootEntries(img.path);
  try {
    const uki = scan.entries.find((e) => e.source === 'uki')!;
    assert.ok((await scan.read(uki.files.kernel)).equals(readFileSync(KERNEL)));
    assert.ok((await scan.read(uki.files.initrds[0]!)).equals(readFileSync(initrd)));
    assert.notDeepEqual(ourMounts(), []);
  } finally {
    await scan.close();
  }
  assert.deepEqual(ourMounts(), []);
  assert.equal(loopsOn(img.path), '');
  assert.equal(sha(img.path), hash);
});

test('MBR, Alpine extlinux.conf in /boot of an ext4 root', async () => {
  const img = buildDiskImage(join(dir, 'alpine.img'), {
    scheme: 'mbr',
    partitions: [{ sizeMiB: 12, fs: 'ext4', files: { 'boot/extlinux.conf': fixture('syslinux/alpine-extlinux.conf'), 'boot/vmlinuz-virt': 'k', 'boot/initramfs-virt': 'i' } }],
  });
  const r = await runClean(img.path);
  assert.equal(r.code, 0, r.stderr);
  const [first] = JSON.parse(r.stdout) as Record<string, unknown>[];
  assert.deepEqual([first!.source, first!.kernel, first!.initrds, first!.title, first!.partition], ['syslinux', '/boot/vmlinuz-virt', ['/boot/initramfs-virt'], 'Linux virt', `${img.path}#1`]);
  assert.match(String(first!.cmdline), /^root=UUID=bff03f67/);
});

test('MBR, the override file wins over kernel pairs; kernel pairs alone take --cmdline', async () => {
  const img = buildDiskImage(join(dir, 'override.img'), {
    scheme: 'mbr',
    partitions: [
      { sizeMiB: 8, fs: 'ext4', files: { 'stiefelsystem.json': JSON.stringify({ kernel: `vmlinuz-${OLD}`, initrd: `initrd.img-${OLD}`, cmdline: 'root=/dev/sda2 ro' }), [`vmlinuz-${NEW}`]: 'k18', [`initrd.img-${NEW}`]: 'i18', [`vmlinuz-${OLD}`]: 'k9', [`initrd.img-${OLD}`]: 'i9' } },
      { sizeMiB: 8, fs: 'ext4', files: { 'etc/hostname': 'laptop\n' } },
    ],
  });
  const r = await runClean(img.path);
  assert.equal(r.code, 0, r.stderr);
  const entries = JSON.parse(r.stdout) as Record<string, unknown>[];
  assert.deepEqual(entries.map((e) => [e.source, e.version ?? null, e.default]), [['override', null, true], ['kernel-pair', NEW, false], ['kernel-pair', OLD, false]]);
  assert.equal(entries[0]!.kernel, `/vmlinuz-${OLD}`);

  const pairs = buildDiskImage(join(dir, 'pairs.img'), { scheme: 'mbr', partitions: [{ sizeMiB: 8, fs: 'ext4', files: { [`vmlinuz-${NEW}`]: 'k', [`initrd.img-${NEW}`]: 'i' } }] });
  const table = await runClean(pairs.path, ['--cmdline', 'root=LABEL=root ro']);
  assert.equal(table.code, 0, table.stderr);
  const n = NEW.replace(/\./g, '\\.');
  assert.match(table.stdout, new RegExp(`^\\*\\s+kernel-pair\\s+${n}\\s+\\S+pairs\\.img#1\\s+/vmlinuz-${n}\\s+/initrd\\.img-${n}\\s+root=LABEL=root ro`, 'm'));
});

test('nothing usable: exit 1, every layout looked at and why it failed, and still no trace', async () => {
  const img = buildDiskImage(join(dir, 'broken.img'), {
    scheme: 'gpt',
    partitions: [{ sizeMiB: 8, fs: 'ext4', files: { 'grub/grub.cfg': "menuentry 'Gone' { linux /vmlinuz-gone root=/dev/sda1\n initrd /initrd-gone }\n", 'loader/entries/x.conf': 'title X\nefi /EFI/x.efi\n' } }],
  });
  const r = await runClean(img.path);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /skipped \[grub\].*"Gone".*kernel \/vmlinuz-gone is missing/);
  assert.match(r.stderr, /skipped \[bls\].*x\.conf: an EFI program entry/);
  for (const layout of ['override', 'bls', 'uki', 'grub', 'syslinux', 'kernel-pair']) assert.match(r.stderr, new RegExp(`^  ${layout}: `, 'm'));
  assert.match(r.stderr, /no usable boot entry on .*broken\.img/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});

test('a whole disk and a partition as block devices, and an ESP as a directory', async () => {
  const img = buildDiskImage(join(dir, 'blk.img'), { scheme: 'gpt', partitions: [{ sizeMiB: 4 }, { sizeMiB: 8, fs: 'ext4', files: { 'boot/vmlinuz-6.2': 'k', 'boot/initrd.img-6.2': 'i' } }] });
  const disk = execFileSync('losetup', ['--find', '--show', '--read-only', img.path], { encoding: 'utf8' }).trim();
  const part = execFileSync('losetup', ['--find', '--show', '--read-only', '--offset', String(img.partitions[1]!.offset), '--sizelimit', String(img.partitions[1]!.size), img.path], { encoding: 'utf8' }).trim();
  try {
    const whole = await runCli(['boot-entries', disk, '--json']);
    assert.equal(whole.code, 0, whole.stderr);
    assert.equal((JSON.parse(whole.stdout) as { partition: string }[])[0]!.partition, `${disk}p2`);
    const one = await runCli(['boot-entries', part, '--json']);
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual((JSON.parse(one.stdout) as { partition: string; kernel: string }[]).map((e) => [e.partition, e.kernel]), [[part, '/boot/vmlinuz-6.2']]);
    assert.deepEqual(ourMounts(), []);
  } finally {
    execFileSync('losetup', ['--detach', part]);
    execFileSync('losetup', ['--detach', disk]);
  }
  // An ESP with systemd-boot entries, as a directory (FAT cannot be mounted on this host).
  const esp = join(dir, 'esp');
  for (const n of ['loader/loader.conf', 'loader/entries/arch.conf', 'loader/entries/arch-fallback.conf']) {
    mkdirSync(join(esp, n, '..'), { recursive: true });
    writeFileSync(join(esp, n), fixture(`bls/arch/${n}`));
  }
  for (const f of ['vmlinuz-linux', 'amd-ucode.img', 'initramfs-linux.img', 'initramfs-linux-fallback.img']) writeFileSync(join(esp, f), f);
  const r = await runCli(['boot-entries', esp, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const entries = JSON.parse(r.stdout) as { id: string; default: boolean; initrds: string[] }[];
  assert.deepEqual(entries.filter((e) => e.id.endsWith('.conf')).map((e) => [e.id, e.default]), [['arch.conf', true], ['arch-fallback.conf', false]]);
  assert.deepEqual(entries[0]!.initrds, ['/amd-ucode.img', '/initramfs-linux.img']);
});

test('Ctrl-C while partitions are being mounted: exit 1, everything undone', async () => {
  const parts = Array.from({ length: 10 }, (_, i) => ({ sizeMiB: 4, fs: 'ext4' as const, files: { [`vmlinuz-6.${i}`]: 'k', [`initrd.img-6.${i}`]: 'i' } }));
  const img = buildDiskImage(join(dir, 'many.img'), { scheme: 'gpt', partitions: parts });
  const hash = sha(img.path);
  // In its own process group, like a shell job: SIGINT goes to the whole group, as Ctrl-C does.
  const child = spawn(process.execPath, [cliPath(), 'boot-entries', img.path], { env: { ...process.env, STIEFEL_DEBUG: 'boot-entries' }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let sent = false;
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (!sent && /\bmounted \S+ at /.test(stderr)) {
      sent = true;
      process.kill(-child.pid!, 'SIGINT');
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  assert.ok(sent, `never saw a mount: ${stderr}`);
  assert.equal(code, 1, stderr);
  assert.match(stderr, /interrupted/);
  assert.ok(stderr.includes('undid: mount '), 'the mounted partition was unmounted');
  assert.deepEqual(ourMounts(), []);
  assert.equal(loopsOn(img.path), '');
  assert.equal(sha(img.path), hash);
});
