// The stream transport: small replies are copied into one batch per turn
// (the caller's buffer is free at once) and the transport reports what it
// holds until the OS has taken it; large replies pass through untouched and
// stay the caller's until then.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { BufferPool } from '../../src/nbd/buffer-pool';
import { createServer, connect } from 'node:net';
import { acceptedSocketTransport, streamTransport } from '../../src/nbd/transport';

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

// The accepted-socket transport (reads into slabs through onread), on a real
// loopback server: every byte in order, chunks that stay valid after later
// reads, pause and resume, replies, and the server's count of connections.
for (const keeps of [true, false]) {
test(`acceptedSocketTransport, a handler that ${keeps ? 'keeps every chunk' : 'copies and holds nothing (the slab is reused)'}: a loopback client's bytes in order, pause/resume, replies, and server.close() completing`, async () => {
  const total = 5 * 1024 * 1024 + 123;
  const sent = Buffer.alloc(total);
  for (let i = 0; i < total; i++) sent[i] = (i * 7 + (i >> 13)) & 0xff;
  const chunks: Buffer[] = [];
  let ended: (() => void) | undefined;
  const endedP = new Promise<void>((r) => (ended = r));
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    const t = acceptedSocketTransport(socket);
    let got = 0;
    let paused = false;
    t.start({
      data: (c: Buffer) => {
        chunks.push(keeps ? c : Buffer.from(c));
        got += c.length;
        if (!paused && got > total / 2) {
          paused = true;
          t.pause();
          setTimeout(() => t.resume(), 50);
        }
        if (got === total) {
          t.write(Buffer.from('done\n'));
          t.end();
        }
      },
      end: () => ended?.(),
      buffered: () => undefined,
      holding: () => keeps,
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  let reply = '';
  client.setEncoding('utf8').on('data', (d: string) => (reply += d));
  for (let off = 0; off < total; off += 300_000) client.write(sent.subarray(off, Math.min(total, off + 300_000)));
  await new Promise<void>((r) => client.on('end', r));
  client.end();
  await endedP;
  assert.equal(reply, 'done\n');
  // Later reads never overwrote an earlier chunk: concatenated, they are what was sent.
  assert.ok(Buffer.concat(chunks).equals(sent), 'every byte, in order, intact');
  // Reused or not: kept chunks are views of slabs, copied ones are not.
  if (keeps) assert.ok(chunks.every((c) => c.buffer.byteLength >= 1024 * 1024));
  assert.ok(chunks.length > 1);
  // The connection counted down on the server: close() completes.
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});
}

// Direct reads: a handler that offers a buffer of its own gets the bytes
// read straight into it (a write's data, without the copy out of the slab).
test('acceptedSocketTransport reads into the handler\'s own buffer while it offers one, into slabs otherwise, every byte in order', async () => {
  const total = 3 * 1024 * 1024 + 17;
  const sent = Buffer.alloc(total);
  for (let i = 0; i < total; i++) sent[i] = (i * 13 + (i >> 11)) & 0xff;
  const into = Buffer.alloc(total);
  let filled = 0;
  let directReads = 0;
  let chunkReads = 0;
  let ended: (() => void) | undefined;
  const endedP = new Promise<void>((r) => (ended = r));
  const server = createServer({ pauseOnConnect: true }, (socket) => {
    const t = acceptedSocketTransport(socket);
    t.start({
      data: (c: Buffer) => {
        chunkReads++;
        c.copy(into, filled);
        filled += c.length;
        if (filled === total) t.end();
      },
      // Offered only in the second half, so that both kinds of read happen.
      directTarget: (minimum) => (filled > total / 2 && total - filled >= minimum ? into.subarray(filled) : undefined),
      filledDirect: (n) => {
        directReads++;
        filled += n;
        if (filled === total) t.end();
      },
      writesLarge: () => true,
      end: () => ended?.(),
      buffered: () => undefined,
      holding: () => false,
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const client = connect(port, '127.0.0.1');
  client.resume();
  for (let off = 0; off < total; off += 200_000) client.write(sent.subarray(off, Math.min(total, off + 200_000)));
  await new Promise<void>((r) => client.on('end', r));
  client.end();
  await endedP;
  assert.ok(into.equals(sent), 'every byte, in order, where it belongs');
  assert.ok(directReads > 0 && chunkReads > 0, `direct reads ${directReads}, slab reads ${chunkReads}`);
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});
