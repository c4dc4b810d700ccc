// Backends: the file backend on real (sparse) files of this machine's file
// system, its hole map from filefrag and hole punching with fallocate, the
// memory backend, and the read-only wrapper.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBackend, extentsFromRanges, parseFilefrag, probeEndByReading } from '../../src/nbd/backend-file';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { readOnlyBackend } from '../../src/nbd/backend-read-only';
import { BackendError } from '../../src/nbd/errno';
import { NBD_ENOTSUP, NBD_EPERM, NBD_STATE_HOLE, NBD_STATE_ZERO } from '../../src/nbd/protocol';
import { StiefelError } from '../../src/errors';
import { requireTool } from '../helpers/tools';

const MiB = 1024 * 1024;
const HZ = NBD_STATE_HOLE | NBD_STATE_ZERO;

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'stf2-backend-'));
}

test('filefrag output parses into data ranges clamped to the file size', () => {
  const out = `Filesystem type is: ef53
File size of x is 1073741824 (2097152 blocks of 512 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:     8000..    8007:          0..         0:      0:             unknown_loc,delalloc
   1:   204800..  210943:    1234..      7377:   6144:             last,eof
x: 2 extents found
`;
  assert.deepEqual(parseFilefrag(out, 1073741824), [
    [8000 * 512, 8008 * 512],
    [204800 * 512, 210944 * 512],
  ]);
  assert.deepEqual(parseFilefrag(out, 204800 * 512 + 100), [
    [8000 * 512, 8008 * 512],
    [204800 * 512, 204800 * 512 + 100],
  ]);
  assert.deepEqual(
    extentsFromRanges([[4096, 8192], [16384, 20480]], 0, 24576),
    [
      { length: 4096, flags: HZ },
      { length: 4096, flags: 0 },
      { length: 8192, flags: HZ },
      { length: 4096, flags: 0 },
      { length: 4096, flags: HZ },
    ],
  );
  assert.deepEqual(extentsFromRanges([[4096, 8192]], 5000, 100), [{ length: 100, flags: 0 }]);
  assert.deepEqual(extentsFromRanges([], 0, 10), [{ length: 10, flags: HZ }]);
});

test('extents stop at the number asked for, however fragmented the file or memory is', async () => {
  // 10,000 data ranges with holes between them.
  const ranges = Array.from({ length: 10_000 }, (_, i): [number, number] => [i * 8192, i * 8192 + 4096]);
  assert.deepEqual(extentsFromRanges(ranges, 0, 10_000 * 8192, 3), [
    { length: 4096, flags: 0 },
    { length: 4096, flags: HZ },
    { length: 4096, flags: 0 },
  ]);
  assert.equal(extentsFromRanges(ranges, 0, 10_000 * 8192, 1024).length, 1024);
  assert.equal(extentsFromRanges(ranges, 0, 10_000 * 8192).length, 20_000);
  const m = new MemoryBackend({ size: 64 * 65536 });
  for (let p = 0; p < 64; p += 2) await m.pwrite([Buffer.alloc(1, 1)], p * 65536, { fua: false });
  assert.deepEqual(await m.extents(0, 64 * 65536, 2), [
    { length: 65536, flags: 0 },
    { length: 65536, flags: HZ },
  ]);
  assert.equal((await m.extents(0, 64 * 65536, 1024)).length, 64);
});

test('file backend: read, write, FUA write, flush on a real file', async () => {
  const dir = tmp();
  try {
    const path = join(dir, 'disk.img');
    writeFileSync(path, Buffer.alloc(MiB, 0x11));
    const b = await FileBackend.open(path);
    assert.equal(b.size, MiB);
    assert.equal(b.isBlockDevice, false);
    assert.ok(b.capabilities.multiConn && b.capabilities.trim && b.capabilities.extents);
    await b.pwrite([Buffer.from('abc'), Buffer.from('def')], 10, { fua: false });
    await b.pwrite([Buffer.from('XYZ')], MiB - 3, { fua: true });
    await b.flush();
    const buf = Buffer.alloc(8);
    await b.pread(buf, 9);
    assert.equal(buf.toString('latin1'), '\x11abcdef\x11');
    await b.close();
    const bytes = readFileSync(path);
    assert.equal(bytes.subarray(MiB - 3).toString(), 'XYZ');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file backend: holes of a sparse file, trim punches holes, writes show up in the map at once', async () => {
  requireTool('filefrag');
  requireTool('fallocate');
  const dir = tmp();
  try {
    const path = join(dir, 'sparse.img');
    writeFileSync(path, '');
    truncateSync(path, 16 * MiB);
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(MiB, 0xab), 0, MiB, 4 * MiB);
    closeSync(fd);
    const b = await FileBackend.open(path);
    assert.deepEqual(await b.extents(0, 16 * MiB, 1024), [
      { length: 4 * MiB, flags: HZ },
      { length: MiB, flags: 0 },
      { length: 11 * MiB, flags: HZ },
    ]);
    // A write through the backend is visible in the next map.
    await b.pwrite([Buffer.alloc(4096, 1)], 8 * MiB, { fua: false });
    const after = await b.extents(8 * MiB - 4096, 12288, 1024);
    assert.deepEqual(after, [
      { length: 4096, flags: HZ },
      { length: 4096, flags: 0 },
      { length: 4096, flags: HZ },
    ]);
    // Trim punches a real hole.
    const blocksBefore = statSync(path).blocks;
    await b.trim(4 * MiB, MiB, { fua: true });
    assert.ok(statSync(path).blocks < blocksBefore);
    assert.deepEqual(await b.extents(4 * MiB, MiB, 1024), [{ length: MiB, flags: HZ }]);
    const z = Buffer.alloc(16, 9);
    await b.pread(z, 4 * MiB);
    assert.deepEqual(z, Buffer.alloc(16));
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file backend: 300 trims at once punch every range (merged runs, not 300 processes)', async () => {
  requireTool('filefrag');
  requireTool('fallocate');
  const dir = tmp();
  try {
    const path = join(dir, 'trim.img');
    writeFileSync(path, Buffer.alloc(20 * MiB, 0x5a));
    const b = await FileBackend.open(path);
    await Promise.all(Array.from({ length: 300 }, (_, i) => b.trim(i * 65536, 65536, { fua: false })));
    assert.deepEqual(await b.extents(0, 20 * MiB, 1024), [
      { length: 300 * 65536, flags: HZ },
      { length: 20 * MiB - 300 * 65536, flags: 0 },
    ]);
    const z = Buffer.alloc(16, 9);
    await b.pread(z, 299 * 65536);
    assert.deepEqual(z, Buffer.alloc(16));
    await b.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file backend: write zeroes, small (written) and large (fallocate), with and without NO_HOLE; fast zero', async () => {
  requireTool('fallocate');
  const dir = tmp();
  try {
    const path = join(dir, 'z.img');
    writeFileSync(path, Buffer.alloc(16 * MiB, 0xff));
    const b = await FileBackend.open(path);
    await b.writeZeroes(100, 1000, { fua: false, mayTrim: true, fast: false });
    await b.writeZeroes(4 * MiB, 8 * MiB, { fua: true, mayTrim: true, fast: false });
    await b.writeZeroes(12 * MiB, 4 * MiB, { fua: false, mayTrim: false, fast: false });
    await assert.rejects(b.writeZeroes(0, 4096, { fua: false, mayTrim: true, fast: true }), (e: unknown) => e instanceof BackendError && e.nbdError === NBD_ENOTSUP);
    await b.writeZeroes(2 * MiB, 2 * MiB, { fua: false, mayTrim: true, fast: true });
    await b.close();
    const bytes = readFileSync(path);
    const expect = Buffer.alloc(16 * MiB, 0xff);
    expect.fill(0, 100, 1100);
    expect.fill(0, 2 * MiB, 16 * MiB);
    assert.ok(bytes.equals(expect));
    // The punched 8 MiB are no longer allocated; the NO_HOLE range is.
    assert.ok(statSync(path).blocks * 512 <= 16 * MiB - 8 * MiB + MiB);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('file backend: open errors are one line naming the fix', async () => {
  const dir = tmp();
  try {
    await assert.rejects(FileBackend.open(join(dir, 'missing.img')), (e: unknown) => e instanceof StiefelError && /no such file/.test(e.message));
    await assert.rejects(FileBackend.open(dir), (e: unknown) => e instanceof StiefelError && /not a regular file or a block device/.test(e.message));
    await assert.rejects(FileBackend.open('/dev/null'), (e: unknown) => e instanceof StiefelError && e.code === 'E_NBD_FILE_TYPE');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the size probe by reading finds the end of a device-like descriptor', async () => {
  const dir = tmp();
  try {
    const path = join(dir, 'dev.img');
    writeFileSync(path, Buffer.alloc(3 * MiB + 512, 1));
    const fd = openSync(path, 'r');
    assert.equal(await probeEndByReading(fd), 3 * MiB + 512);
    closeSync(fd);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('read-only wrapper refuses every change with EPERM and says so', async () => {
  const inner = new MemoryBackend({ size: MiB, initial: Buffer.from('x') });
  const ro = readOnlyBackend(inner);
  assert.equal(ro.capabilities.readOnly, true);
  assert.equal(ro.capabilities.trim, false);
  const eperm = (e: unknown): boolean => e instanceof BackendError && e.nbdError === NBD_EPERM;
  await assert.rejects(ro.pwrite([Buffer.from('y')], 0, { fua: false }), eperm);
  await assert.rejects(ro.trim(0, 1, { fua: false }), eperm);
  await assert.rejects(ro.writeZeroes(0, 1, { fua: false, mayTrim: false, fast: false }), eperm);
  const b = Buffer.alloc(1);
  await ro.pread(b, 0);
  assert.equal(b.toString(), 'x');
  assert.equal(inner.calls.pwrite, 0);
});

test('memory backend: pages appear on write and vanish on trim', async () => {
  const m = new MemoryBackend({ size: 4 * 65536 });
  await m.pwrite([Buffer.alloc(10, 1)], 65536 + 5, { fua: false });
  assert.equal(m.allocatedPages, 1);
  assert.deepEqual(await m.extents(0, 4 * 65536, 1024), [
    { length: 65536, flags: HZ },
    { length: 65536, flags: 0 },
    { length: 2 * 65536, flags: HZ },
  ]);
  await m.trim(65536, 65536, { fua: false });
  assert.equal(m.allocatedPages, 0);
});
