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
function stalledStream(): { stream: Duplex; written: Buffer[]; complete: () => void } {
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
    complete: () => {
      const p = pending;
      pending = [];
      for (const cb of p) cb();
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
  // 1,000 replies of 16 bytes: one batch, copied out (16,000 bytes is over 4 KiB, so the batch buffer itself goes).
  for (let i = 0; i < 1000; i++) t.write(Buffer.alloc(16, i & 0xff), () => dones.push(i));
  assert.equal(dones.length, 1000, 'the caller may reuse its buffers at once');
  assert.equal(held, 0, 'nothing handed to the stream before the turn ends');
  await turn();
  assert.equal(written.length, 1);
  assert.equal(written[0]!.length, 16_000);
  assert.equal(held, 256 * 1024, 'the whole batch buffer is held, not only its 16,000 bytes');
  complete();
  assert.equal(held, 0);
  // A few bytes alone are copied out: they hold only themselves.
  t.write(Buffer.alloc(20, 1));
  await turn();
  assert.equal(held, 20);
  complete();
  assert.equal(held, 0);
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
  complete();
  await turn();
  assert.equal(done, true);
});
