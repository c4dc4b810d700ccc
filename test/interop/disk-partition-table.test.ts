// Our GPT/MBR and file system readers against images made by the real tools
// (sfdisk, mke2fs, mkfs.vfat) and what sfdisk and blkid say about them.
// No root: the images are plain files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPartitionTable, GPT_TYPE_ESP, type ReadAt } from '../../src/disk/partition-table';
import { probeFilesystem, PROBE_BYTES } from '../../src/disk/fs-probe';
import { buildDiskImage } from '../helpers/disk-image';
import { requireTool } from '../helpers/tools';

const reader = (path: string): ReadAt => async (offset, length) => {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, offset);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
};

function sfdiskJson(path: string): { partitiontable: { label: string; sectorsize?: number; partitions: { node: string; start: number; size: number; type: string; uuid?: string }[] } } {
  return JSON.parse(execFileSync('sfdisk', ['--json', path], { encoding: 'utf8' }));
}

test('GPT: partitions, types, GUIDs and file systems match sfdisk and blkid', async () => {
  requireTool('blkid');
  const dir = mkdtempSync(join(tmpdir(), 'stf4-pt-'));
  try {
    const img = buildDiskImage(join(dir, 'gpt.img'), {
      scheme: 'gpt',
      partitions: [
        { sizeMiB: 4, type: 'esp', fs: 'vfat', files: { 'EFI/BOOT/BOOTX64.EFI': 'x' } },
        { sizeMiB: 8, fs: 'ext4', uuid: '11111111-2222-4333-8444-555555555555', label: 'boot' },
        { sizeMiB: 2, type: 'swap' },
      ],
    });
    const t = (await readPartitionTable(reader(img.path), img.size))!;
    assert.equal(t.scheme, 'gpt');
    assert.deepEqual(t.problems, []);
    const sf = sfdiskJson(img.path).partitiontable;
    assert.deepEqual(t.partitions.map((p) => [p.number, p.offset / 512, p.size / 512, p.type.toUpperCase(), p.uuid!.toUpperCase()]),
      sf.partitions.map((p, i) => [i + 1, p.start, p.size, p.type, p.uuid]));
    assert.equal(t.partitions[0]!.type, GPT_TYPE_ESP);
    const probe = async (n: number) => probeFilesystem(await reader(img.path)(t.partitions[n]!.offset, PROBE_BYTES));
    const ext = await probe(1);
    assert.deepEqual([ext.kind, ext.uuid, ext.label, ext.journal], ['ext', '11111111-2222-4333-8444-555555555555', 'boot', true]);
    const fat = await probe(0);
    const part = join(dir, 'p1');
    execFileSync('dd', [`if=${img.path}`, `of=${part}`, 'bs=512', `skip=${t.partitions[0]!.offset / 512}`, `count=${t.partitions[0]!.size / 512}`, 'status=none']);
    assert.equal(fat.kind, 'vfat');
    assert.equal(fat.uuid, execFileSync('blkid', ['-p', '-s', 'UUID', '-o', 'value', part], { encoding: 'utf8' }).trim());
    assert.equal((await probe(2)).kind, 'unknown');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GPT: a corrupted primary header falls back to the backup', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf4-pt-'));
  try {
    const img = buildDiskImage(join(dir, 'gpt.img'), { scheme: 'gpt', partitions: [{ sizeMiB: 2 }, { sizeMiB: 2 }] });
    // Zero 8 bytes inside the primary header (LBA 1): its CRC32 no longer matches.
    execFileSync('dd', ['if=/dev/zero', `of=${img.path}`, 'bs=1', 'seek=600', 'count=8', 'conv=notrunc', 'status=none']);
    const t = (await readPartitionTable(reader(img.path), img.size))!;
    assert.equal(t.partitions.length, 2);
    assert.match(t.problems.join(), /CRC32 mismatch; using the backup GPT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('MBR: primary and logical partitions in an extended one, numbered as Linux does', async () => {
  requireTool('sfdisk');
  const dir = mkdtempSync(join(tmpdir(), 'stf4-pt-'));
  try {
    const path = join(dir, 'mbr.img');
    execFileSync('truncate', ['-s', '40M', path]);
    execFileSync('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], {
      input: 'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=8192, type=83\nstart=10240, size=61440, type=5\nstart=12288, size=8192, type=83\nstart=22528, size=8192, type=8e\n',
    });
    const t = (await readPartitionTable(reader(path), 40 * 1024 * 1024))!;
    assert.equal(t.scheme, 'mbr');
    const sf = sfdiskJson(path).partitiontable.partitions.filter((p) => p.type !== '5');
    assert.deepEqual(t.partitions.map((p) => [p.number, p.offset / 512, p.size / 512]), sf.map((p) => [Number(/(\d+)$/.exec(p.node)![1]), p.start, p.size]));
    assert.deepEqual(t.partitions.map((p) => p.uuid), ['1234abcd-01', '1234abcd-05', '1234abcd-06']);
    assert.deepEqual(t.partitions.map((p) => p.type), ['0x83', '0x83', '0x8e']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
