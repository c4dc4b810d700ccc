// The stream transport: small replies are copied into one batch per turn
// (the caller's buffer is free at once) and the transport reports what it
// holds until the OS has taken it; large replies pass through untouched and
// stay the caller's until then.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { BufferPool } from '../../src/nbd/buffer-pool';
import { streamTransport } from '../../src/nbd/transport';

/** A duplex whose writes complete only when the test says so (a client that does not read). */
function stalledStream(): { stream: Duplex; written: Buffer[]; complete: () => Promise<void> } {
  const written: Buffer[] = [];
  let pending: Array<() => void> = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      written.push(chunk);
      pending.push(cb);
    },
    highWaterMark: 1 << 30,
  });
  return {
    stream,
    written,
    // The stream hands over one chunk at a time: complete until none is left.
    complete: async () => {
      while (pending.length > 0) {
        const p = pending;
        pending = [];
        for (const cb of p) cb();
        await new Promise((r) => setImmediate(r));
      }
    },
  };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('small replies: copied at once, held as one batch until the OS takes it', async () => {
  const { stream, written, complete } = stalledStream();
  const pool = new BufferPool({ maxPooledBytes: 8 << 20 });
  const t = streamTransport(stream, { pool });
  let held = 0;
  t.start({ data: () => undefined, end: () => undefined, buffered: (d) => (held += d) });
  const dones: number[] = [];
  // 1,000 replies of 16 bytes in one turn: one batch, outgrowing the small buffer into a pooled one.
  for (let i = 0; i < 1000; i++) t.write(Buffer.alloc(16, i & 0xff), () => dones.push(i));
  assert.equal(dones.length, 1000, 'the caller may reuse its buffers at once');
  assert.equal(held, 0, 'nothing handed to the stream before the turn ends');
  await turn();
  assert.equal(written.length, 1);
  assert.equal(written[0]!.length, 16_000);
  assert.equal(held, 256 * 1024, 'the whole batch buffer is held, not only its 16,000 bytes');
  assert.ok(written[0]!.subarray(0, 16).equals(Buffer.alloc(16, 0)) && written[0]!.subarray(15_984).equals(Buffer.alloc(16, 999 & 0xff)));
  await complete();
  assert.equal(held, 0);
  // A quiet turn (one acknowledgement) holds one small buffer of the connection's own, reused.
  const allocations = pool.allocations;
  for (let round = 0; round < 3; round++) {
    t.write(Buffer.alloc(16, round));
    await turn();
    assert.equal(held, 4096);
    await complete();
    assert.equal(held, 0);
  }
  assert.equal(pool.allocations, allocations, 'no pooled buffer for quiet turns');
  // Both small buffers with the OS: the next turn takes a pooled one.
  for (let round = 0; round < 3; round++) {
    t.write(Buffer.alloc(16, round));
    await turn();
  }
  assert.equal(held, 2 * 4096 + 256 * 1024);
  await complete();
  assert.equal(held, 0);
  assert.deepEqual(written.slice(-3).map((b) => b[0]), [0, 1, 2], 'in order');
});

test('large replies pass through without a copy and stay the caller\'s until written', async () => {
  const { stream, written, complete } = stalledStream();
  const t = streamTransport(stream);
  let held = 0;
  t.start({ data: () => undefined, end: () => undefined, buffered: (d) => (held += d) });
  const big = Buffer.alloc(1 << 20, 7);
  let done = false;
  t.write(big, () => (done = true));
  assert.equal(written[0], big, 'the same buffer, not a copy');
  assert.equal(done, false);
  assert.equal(held, 0, 'accounted by the caller, not the transport');
  await complete();
  await turn();
  assert.equal(done, true);
});
