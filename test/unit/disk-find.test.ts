// Naming the laptop's disk by its partition table's id: the same id lsblk
// and blkid print, for GPT and MBR, and the lookup among a machine's disks.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDiskId } from '../../src/disk/partition-table';
import { readRange } from '../../src/disk/read-range';
import { resolveDisk } from '../../src/disk/find-disk';
import { silentLogger } from '../../src/log';
import { requireTool } from '../helpers/tools';

const work = mkdtempSync(join(tmpdir(), 'stf14-disk-'));
after(() => rmSync(work, { recursive: true, force: true }));

function gpt(path: string, guid: string): void {
  execFileSync('truncate', ['-s', '8M', path]);
  execFileSync(requireTool('sgdisk'), ['-U', guid, '-n1:2048:+1M', path], { stdio: 'ignore' });
}

function mbr(path: string, id: string): void {
  execFileSync('truncate', ['-s', '8M', path]);
  execFileSync(requireTool('sfdisk'), ['-q', path], { input: `label: dos\nlabel-id: 0x${id}\n2048,2048,83\n` });
}

const blkid = (path: string): string => execFileSync(requireTool('blkid'), ['-p', '-o', 'value', '-s', 'PTUUID', path], { encoding: 'utf8' }).trim();

test("a disk's id is what blkid calls its PTUUID, for GPT and MBR; none without a table", async () => {
  const a = join(work, 'gpt.img');
  gpt(a, '1B2C3D4E-0000-4111-8222-0123456789AB');
  const b = join(work, 'mbr.img');
  mbr(b, 'deadbeef');
  const none = join(work, 'none.img');
  writeFileSync(none, Buffer.alloc(65536));
  for (const p of [a, b]) assert.equal(await readDiskId((o, l) => readRange(p, o, l)), blkid(p));
  assert.equal(await readDiskId((o, l) => readRange(a, o, l)), '1b2c3d4e-0000-4111-8222-0123456789ab');
  assert.equal(await readDiskId((o, l) => readRange(none, o, l)), null);
});

test('PTUUID= finds the disk whatever its name; a missing one is one line listing what is there', async () => {
  const sys = join(work, 'sys-block');
  const dev = join(work, 'dev');
  mkdirSync(dev);
  for (const n of ['sda', 'sdb', 'loop0', 'nvme0n1']) mkdirSync(join(sys, n), { recursive: true });
  mbr(join(dev, 'sda'), '0badcafe');
  gpt(join(dev, 'nvme0n1'), 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE');
  writeFileSync(join(dev, 'sdb'), Buffer.alloc(4096));
  assert.equal(await resolveDisk('PTUUID=aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', { sysBlock: sys, dev, log: silentLogger }), join(dev, 'nvme0n1'));
  assert.equal(await resolveDisk('PTUUID=0badcafe', { sysBlock: sys, dev, log: silentLogger }), join(dev, 'sda'));
  assert.equal(await resolveDisk('/dev/vda', { sysBlock: sys, dev, log: silentLogger }), '/dev/vda');
  await assert.rejects(resolveDisk('PTUUID=12345678', { sysBlock: sys, dev, waitMs: 0, log: silentLogger }), (e: Error) =>
    e.message === 'no disk here has partition table 12345678 (server.disk PTUUID=12345678); found: nvme0n1 aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee, sda 0badcafe, sdb (no partition table)',
  );
});
