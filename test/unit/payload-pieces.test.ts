import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { payloadFileFromParts } from '../../src/laptop/payload-source';
import { defaultWorkerCount, FileSink, HashWorkerPool, PayloadVerifyError } from '../../src/desktop/file-sink';
import { MAX_PIECES, MIN_PIECE_SIZE, PieceHasher, pieceCount, pieceDigests, pieceRange, pieceSizeFor } from '../../src/payload/pieces';

test('piece size: 8 MiB, doubled until a file has at most 512 pieces', () => {
  assert.equal(pieceSizeFor(0), MIN_PIECE_SIZE);
  assert.equal(pieceSizeFor(100e6), MIN_PIECE_SIZE);
  assert.equal(pieceSizeFor(MAX_PIECES * MIN_PIECE_SIZE), MIN_PIECE_SIZE);
  assert.equal(pieceSizeFor(MAX_PIECES * MIN_PIECE_SIZE + 1), 2 * MIN_PIECE_SIZE);
  assert.equal(pieceCount(64 * 2 ** 30, pieceSizeFor(64 * 2 ** 30)), MAX_PIECES);
  assert.deepEqual(pieceRange(2, 20, 8), { start: 16, end: 20 });
});

test('piece digests are the SHA-256 of each slice, whatever the chunking', () => {
  const data = randomBytes(3 * 1024 + 5);
  const expected = [0, 1024, 2048, 3072].map((s) => createHash('sha256').update(data.subarray(s, s + 1024)).digest('hex'));
  assert.deepEqual(pieceDigests(data, 1024), expected);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 700 }), { maxLength: 30 }), (cuts) => {
      const h = new PieceHasher(1024);
      let off = 0;
      for (const c of cuts) {
        h.update(data.subarray(off, Math.min(data.length, off + c)));
        off = Math.min(data.length, off + c);
      }
      h.update(data.subarray(off));
      assert.deepEqual(h.digests(), expected);
    }),
  );
  assert.deepEqual(pieceDigests(Buffer.alloc(0), 1024), []);
});

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-sink-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

async function feed(sink: FileSink, data: Buffer, chunk = 16 * 1024 + 3): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) await sink.write(data.subarray(off, off + chunk));
}

// 3 and 2 workers, and 0: one CPU, batches handled on the calling thread.
for (const workers of [3, 0]) {
  test(`the sink writes the file (0600) and verifies every piece, ${workers} workers`, () =>
    withDir(async (dir) => {
      const data = randomBytes(3 * MIN_PIECE_SIZE + 12345);
      const path = join(dir, 'f');
      const sink = await FileSink.create(path, 'initrd', { size: data.length, pieceSize: MIN_PIECE_SIZE, pieceSha256: pieceDigests(data, MIN_PIECE_SIZE) }, { workers });
      await feed(sink, data);
      await sink.finish();
      assert.deepEqual(readFileSync(path), data);
      assert.equal(statSync(path).mode & 0o777, 0o600);
    }));
}

for (const workers of [2, 0]) {
  test(`one changed byte in any piece is caught, naming the byte range, ${workers} workers`, () =>
    withDir(async (dir) => {
      const data = randomBytes(2 * MIN_PIECE_SIZE + 7);
      const digests = pieceDigests(data, MIN_PIECE_SIZE);
      for (const at of [0, MIN_PIECE_SIZE + 5, data.length - 1]) {
        const bad = Buffer.from(data);
        bad[at]! ^= 0x40;
        const sink = await FileSink.create(join(dir, `f${at}`), 'initrd', { size: data.length, pieceSize: MIN_PIECE_SIZE, pieceSha256: digests }, { workers });
        const piece = Math.floor(at / MIN_PIECE_SIZE);
        const end = Math.min(data.length, (piece + 1) * MIN_PIECE_SIZE) - 1;
        const pattern = new RegExp(`^the initrd does not match the SHA-256 digests in the signed manifest \\(bytes ${piece * MIN_PIECE_SIZE} to ${end}\\)`);
        await assert.rejects(
          (async () => {
            await feed(sink, bad);
            await sink.finish();
          })(),
          (e: Error) => e instanceof PayloadVerifyError && e.code === 'E_PAYLOAD_DIGEST' && pattern.test(e.message),
        );
        await sink.abandon();
      }
    }));
}

test('workers: one per CPU up to 4, none with one CPU', () => {
  assert.deepEqual([1, 2, 3, 4, 8].map((cpus) => defaultWorkerCount(cpus)), [0, 2, 3, 4, 4]);
});

test('too few or too many bytes are refused', () =>
  withDir(async (dir) => {
    const data = randomBytes(MIN_PIECE_SIZE + 1);
    const expected = { size: data.length, pieceSize: MIN_PIECE_SIZE, pieceSha256: pieceDigests(data, MIN_PIECE_SIZE) };
    const short = await FileSink.create(join(dir, 'short'), 'kernel', expected);
    await feed(short, data.subarray(0, data.length - 1));
    await assert.rejects(short.finish(), /the kernel is truncated: got 8388608 of the 8388609 bytes/);
    const long = await FileSink.create(join(dir, 'long'), 'kernel', expected);
    await assert.rejects(feed(long, Buffer.concat([data, Buffer.from('x')])), /sent more than the 8388609 bytes of the kernel/);
    await long.abandon();
    const empty = await FileSink.create(join(dir, 'empty'), 'kernel', { size: 0, pieceSize: MIN_PIECE_SIZE, pieceSha256: [] });
    await empty.finish();
    assert.equal(statSync(join(dir, 'empty')).size, 0);
  }));

test('a payload file from re-openable parts: concatenated, digested once, checked again on open', async () => {
  const a = randomBytes(5000);
  const b = randomBytes(MIN_PIECE_SIZE + 10);
  let bOpens = 0;
  let shrink = false;
  const f = await payloadFileFromParts('initrd of entry x', [
    { length: a.length, open: () => Readable.from([a]) },
    { length: b.length, open: () => (bOpens++, Readable.from([shrink ? b.subarray(1) : b])) },
  ]);
  const all = Buffer.concat([a, b]);
  assert.equal(f.size, all.length);
  assert.equal(f.pieceSize, MIN_PIECE_SIZE);
  assert.deepEqual(f.pieceSha256, pieceDigests(all, MIN_PIECE_SIZE));
  const chunks: Buffer[] = [];
  for await (const c of (await f.open()) as AsyncIterable<Buffer>) chunks.push(c);
  assert.deepEqual(Buffer.concat(chunks), all);
  assert.equal(bOpens, 2);
  shrink = true;
  await assert.rejects(async () => {
    for await (const c of (await f.open()) as AsyncIterable<Buffer>) void c;
  }, /part 2 of initrd of entry x gave 8388617 bytes, not 8388618/);
});

for (const workers of [2, 0]) {
  test(`sinks sharing a worker pool: an abandoned file never spills into the next one, ${workers} workers`, () =>
    withDir(async (dir) => {
      const pool = new HashWorkerPool(workers);
      try {
        const a = randomBytes(3 * MIN_PIECE_SIZE);
        const b = randomBytes(2 * MIN_PIECE_SIZE + 99);
        const sa = await FileSink.create(join(dir, 'a'), 'kernel', { size: a.length, pieceSize: MIN_PIECE_SIZE, pieceSha256: pieceDigests(a, MIN_PIECE_SIZE) }, { pool });
        await feed(sa, a.subarray(0, MIN_PIECE_SIZE + 4096));
        await sa.abandon();
        const sb = await FileSink.create(join(dir, 'b'), 'initrd', { size: b.length, pieceSize: MIN_PIECE_SIZE, pieceSha256: pieceDigests(b, MIN_PIECE_SIZE) }, { pool });
        await feed(sb, b);
        await sb.finish();
        assert.deepEqual(readFileSync(join(dir, 'b')), b);
        assert.ok(statSync(join(dir, 'a')).size <= MIN_PIECE_SIZE + 4096);
      } finally {
        await pool.close();
      }
    }));
}
