// The NBD session state machine over an in-memory transport: handshake
// options, every command, and bad input (the spec's error values, clean
// disconnects where the stream cannot be trusted any more).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeClientFlags, encodeGoOptionData, encodeMetaContextOptionData, encodeOption, encodeRequest } from '../helpers/nbd-encode';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { BackendError } from '../../src/nbd/errno';
import * as P from '../../src/nbd/protocol';
import { blockStatusExtents } from '../helpers/nbd-client';
import { delayedBackend, startSession } from '../helpers/nbd-session';

const MiB = 1024 * 1024;

test('GO: size, flags for a writable export, block sizes, name and description', async () => {
  const { client } = startSession();
  assert.equal(await client.greeting(), P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
  client.sendClientFlags();
  assert.equal((await client.option(P.NBD_OPT_STRUCTURED_REPLY)).at(-1)!.type, P.NBD_REP_ACK);
  const replies = await client.option(P.NBD_OPT_GO, encodeGoOptionData('disk', [P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION, P.NBD_INFO_BLOCK_SIZE]));
  assert.equal(replies.at(-1)!.type, P.NBD_REP_ACK);
  const info = new Map(replies.filter((r) => r.type === P.NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
  const exp = info.get(P.NBD_INFO_EXPORT)!;
  assert.equal(Number(exp.readBigUInt64BE(2)), MiB);
  const flags = exp.readUInt16BE(10);
  for (const f of [
    P.NBD_FLAG_HAS_FLAGS,
    P.NBD_FLAG_SEND_FLUSH,
    P.NBD_FLAG_SEND_FUA,
    P.NBD_FLAG_SEND_TRIM,
    P.NBD_FLAG_SEND_WRITE_ZEROES,
    P.NBD_FLAG_SEND_DF,
    P.NBD_FLAG_CAN_MULTI_CONN,
    P.NBD_FLAG_SEND_CACHE,
    P.NBD_FLAG_SEND_FAST_ZERO,
  ]) {
    assert.ok(flags & f, `flag ${f} set`);
  }
  assert.equal(flags & P.NBD_FLAG_READ_ONLY, 0);
  assert.equal(info.get(P.NBD_INFO_NAME)!.subarray(2).toString(), 'disk');
  assert.equal(info.get(P.NBD_INFO_DESCRIPTION)!.subarray(2).toString(), 'a test disk');
  const bs = info.get(P.NBD_INFO_BLOCK_SIZE)!;
  assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [1, 4096, 32 * MiB]);
  // Transmission works right after the ACK.
  const w = await client.write(4096, Buffer.alloc(512, 7));
  assert.equal(w.error, 0);
  const r = await client.read(4096, 512);
  assert.deepEqual(r.data, Buffer.alloc(512, 7));
});

test('without structured replies, NBD_FLAG_SEND_DF is clear and reads get simple replies', async () => {
  const { client } = startSession();
  const { flags } = await client.handshake({ structured: false });
  assert.equal(flags & P.NBD_FLAG_SEND_DF, 0);
  await client.write(0, Buffer.from('hello'));
  const r = await client.read(0, 5);
  assert.equal(r.structured, false);
  assert.equal(r.data!.toString(), 'hello');
});

test('NBD_OPT_EXPORT_NAME with and without the 124 zero bytes', async () => {
  for (const noZeroes of [false, true]) {
    const { client } = startSession();
    await client.greeting();
    client.sendClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0));
    const { size, flags } = await client.exportName('');
    assert.equal(size, MiB);
    assert.ok(flags & P.NBD_FLAG_HAS_FLAGS);
    const r = await client.read(0, 16);
    assert.equal(r.error, 0);
    assert.deepEqual(r.data, Buffer.alloc(16));
  }
});

test('unknown options and STARTTLS get NBD_REP_ERR_UNSUP and the session goes on', async () => {
  const { client } = startSession();
  await client.greeting();
  client.sendClientFlags();
  for (const opt of [0, 4, P.NBD_OPT_STARTTLS, P.NBD_OPT_EXTENDED_HEADERS, 99, 0xffffffff]) {
    const r = await client.option(opt, Buffer.from('some data'));
    assert.equal(r.length, 1);
    assert.equal(r[0]!.type, P.NBD_REP_ERR_UNSUP);
    assert.equal(r[0]!.option, opt >>> 0);
  }
  const r = await client.option(P.NBD_OPT_GO, encodeGoOptionData('', []));
  assert.equal(r.at(-1)!.type, P.NBD_REP_ACK);
  assert.equal((await client.read(0, 8)).error, 0);
});

test('NBD_OPT_LIST names the export; with data it is NBD_REP_ERR_INVALID', async () => {
  const { client } = startSession();
  await client.greeting();
  client.sendClientFlags();
  const r = await client.option(P.NBD_OPT_LIST);
  assert.deepEqual(r.map((x) => x.type), [P.NBD_REP_SERVER, P.NBD_REP_ACK]);
  const nameLen = r[0]!.data.readUInt32BE(0);
  assert.equal(r[0]!.data.subarray(4, 4 + nameLen).toString(), 'disk');
  assert.equal(r[0]!.data.subarray(4 + nameLen).toString(), 'a test disk');
  assert.equal((await client.option(P.NBD_OPT_LIST, Buffer.from('x')))[0]!.type, P.NBD_REP_ERR_INVALID);
});

test('INFO/GO: unknown export is NBD_REP_ERR_UNKNOWN, malformed data NBD_REP_ERR_INVALID, and both leave the session usable', async () => {
  const { client } = startSession();
  await client.greeting();
  client.sendClientFlags();
  assert.equal((await client.option(P.NBD_OPT_INFO, encodeGoOptionData('nope', [])))[0]!.type, P.NBD_REP_ERR_UNKNOWN);
  assert.equal((await client.option(P.NBD_OPT_GO, encodeGoOptionData('nope', [])))[0]!.type, P.NBD_REP_ERR_UNKNOWN);
  assert.equal((await client.option(P.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1])))[0]!.type, P.NBD_REP_ERR_INVALID);
  const info = await client.option(P.NBD_OPT_INFO, encodeGoOptionData('disk', []));
  assert.equal(info.at(-1)!.type, P.NBD_REP_ACK);
  const go = await client.option(P.NBD_OPT_GO, encodeGoOptionData('disk', []));
  assert.equal(go.at(-1)!.type, P.NBD_REP_ACK);
});

test('meta contexts: need structured replies; list and select base:allocation; unknown namespaces ignored', async () => {
  const { client } = startSession();
  await client.greeting();
  client.sendClientFlags();
  assert.equal(
    (await client.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData('', [P.BASE_ALLOCATION])))[0]!.type,
    P.NBD_REP_ERR_INVALID,
  );
  await client.option(P.NBD_OPT_STRUCTURED_REPLY);
  const list = await client.option(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextOptionData('', []));
  assert.deepEqual(list.map((r) => r.type), [P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
  assert.equal(list[0]!.data.subarray(4).toString(), P.BASE_ALLOCATION);
  const wild = await client.option(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextOptionData('', ['base:']));
  assert.equal(wild[0]!.data.subarray(4).toString(), P.BASE_ALLOCATION);
  const none = await client.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData('', ['qemu:dirty-bitmap:x', 'base:']));
  assert.deepEqual(none.map((r) => r.type), [P.NBD_REP_ACK]);
  const unknown = await client.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData('other', [P.BASE_ALLOCATION]));
  assert.equal(unknown[0]!.type, P.NBD_REP_ERR_UNKNOWN);
  const bad = encodeMetaContextOptionData('', [P.BASE_ALLOCATION]);
  bad.writeUInt32BE(9999, 8);
  assert.equal((await client.option(P.NBD_OPT_SET_META_CONTEXT, bad))[0]!.type, P.NBD_REP_ERR_INVALID);
  // No context selected (the last SET failed): block status is EINVAL.
  assert.equal((await client.option(P.NBD_OPT_GO, encodeGoOptionData('', []))).at(-1)!.type, P.NBD_REP_ACK);
  const bs = await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 });
  assert.equal(bs.error, P.NBD_EINVAL);
});

test('block status reports holes and data; REQ_ONE gives one extent within the request', async () => {
  const backend = new MemoryBackend({ size: 4 * MiB });
  const { client } = startSession({ backend });
  await client.handshake();
  await client.write(MiB, Buffer.alloc(100, 1));
  const all = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 4 * MiB }));
  assert.deepEqual(all, [
    [MiB, P.NBD_STATE_HOLE | P.NBD_STATE_ZERO],
    [65536, 0],
    [3 * MiB - 65536, P.NBD_STATE_HOLE | P.NBD_STATE_ZERO],
  ]);
  const one = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 512, length: 1000, flags: P.NBD_CMD_FLAG_REQ_ONE }));
  assert.deepEqual(one, [[1000, P.NBD_STATE_HOLE | P.NBD_STATE_ZERO]]);
  const beyond = await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 4 * MiB - 512, length: 1024 });
  assert.equal(beyond.error, P.NBD_EINVAL);
});

test('trim, write zeroes (with NO_HOLE and FAST_ZERO), cache, flush and FUA reach the backend', async () => {
  const backend = new MemoryBackend({ size: 4 * MiB });
  const { client } = startSession({ backend });
  await client.handshake();
  await client.write(0, Buffer.alloc(2 * MiB, 0xaa), P.NBD_CMD_FLAG_FUA);
  assert.equal(backend.allocatedPages, 32);
  assert.equal((await client.request({ type: P.NBD_CMD_TRIM, offset: 0, length: MiB })).error, 0);
  assert.equal(backend.allocatedPages, 16);
  const z = await client.request({ type: P.NBD_CMD_WRITE_ZEROES, offset: MiB, length: 4096, flags: P.NBD_CMD_FLAG_NO_HOLE });
  assert.equal(z.error, 0);
  assert.deepEqual((await client.read(MiB - 8, 4104 + 8)).data, Buffer.concat([Buffer.alloc(8 + 4096), Buffer.alloc(8, 0xaa)]));
  const fast = await client.request({ type: P.NBD_CMD_WRITE_ZEROES, offset: 2 * MiB, length: MiB, flags: P.NBD_CMD_FLAG_FAST_ZERO });
  assert.equal(fast.error, 0);
  assert.equal((await client.request({ type: P.NBD_CMD_CACHE, offset: 0, length: MiB })).error, 0);
  assert.equal((await client.flush()).error, 0);
  assert.deepEqual(backend.calls, { pread: 1, pwrite: 1, flush: 1, trim: 1, writeZeroes: 2, cache: 1, extents: 0 });
});

test('out-of-range requests get the spec errors and the session goes on', async () => {
  const { client } = startSession({ size: MiB });
  await client.handshake();
  assert.equal((await client.read(MiB - 10, 11)).error, P.NBD_EINVAL);
  assert.equal((await client.read(2 ** 60, 1)).error, P.NBD_EINVAL);
  assert.equal((await client.read(Number.MAX_SAFE_INTEGER, 4096)).error, P.NBD_EINVAL);
  // A write beyond the end: ENOSPC, and its payload is consumed.
  assert.equal((await client.write(MiB - 2, Buffer.from('abcd'))).error, P.NBD_ENOSPC);
  assert.equal((await client.request({ type: P.NBD_CMD_WRITE_ZEROES, offset: MiB, length: 1 })).error, P.NBD_ENOSPC);
  assert.equal((await client.request({ type: P.NBD_CMD_TRIM, offset: MiB - 1, length: 2 })).error, P.NBD_EINVAL);
  assert.equal((await client.request({ type: P.NBD_CMD_CACHE, offset: MiB, length: 2 })).error, P.NBD_EINVAL);
  const ok = await client.read(MiB - 4, 4);
  assert.equal(ok.error, 0);
});

test('huge lengths: reads above the maximum block size are EINVAL and nothing is allocated for them', async () => {
  const { client } = startSession({ size: MiB });
  await client.handshake();
  const before = process.memoryUsage().arrayBuffers;
  const r = await client.read(0, 0xffffffff);
  assert.equal(r.error, P.NBD_EINVAL);
  assert.match(r.message!, /maximum block size/);
  // A write that claims 4 GiB: refused at once, before its data arrives.
  const w = client.request({ type: P.NBD_CMD_WRITE, offset: 0 }, Buffer.alloc(0), { declaredLength: 0xffffffff });
  assert.equal((await w).error, P.NBD_EINVAL);
  assert.ok(process.memoryUsage().arrayBuffers - before < 64 * MiB);
});

test('unknown commands and flags not valid for a command are EINVAL', async () => {
  const { client } = startSession();
  await client.handshake();
  assert.equal((await client.request({ type: 99 })).error, P.NBD_EINVAL);
  assert.equal((await client.request({ type: P.NBD_CMD_READ, length: 1, flags: P.NBD_CMD_FLAG_NO_HOLE })).error, P.NBD_EINVAL);
  assert.equal((await client.request({ type: P.NBD_CMD_READ, length: 1, flags: 0x8000 })).error, P.NBD_EINVAL);
  assert.equal((await client.request({ type: P.NBD_CMD_FLUSH, offset: 1 })).error, P.NBD_EINVAL);
  assert.equal((await client.request({ type: P.NBD_CMD_WRITE, offset: 0, flags: P.NBD_CMD_FLAG_REQ_ONE }, Buffer.alloc(4))).error, P.NBD_EINVAL);
  // FUA "is valid for all commands": accepted on a read.
  assert.equal((await client.request({ type: P.NBD_CMD_READ, length: 1, flags: P.NBD_CMD_FLAG_FUA })).error, 0);
  // DF is honoured (one chunk).
  const df = await client.request({ type: P.NBD_CMD_READ, length: 65536, flags: P.NBD_CMD_FLAG_DF });
  assert.equal(df.error, 0);
  assert.equal(df.chunks.length, 1);
});

test('read-only: writes, trims and zeroing are EPERM, reads work, flags say read-only', async () => {
  const backend = new MemoryBackend({ size: MiB, initial: Buffer.from('read me') });
  const { client } = startSession({ backend, readOnly: true });
  const { flags } = await client.handshake();
  assert.ok(flags & P.NBD_FLAG_READ_ONLY);
  assert.equal(flags & (P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FUA), 0);
  const w = await client.write(0, Buffer.from('nope'));
  assert.equal(w.error, P.NBD_EPERM);
  assert.match(w.message!, /read-only/);
  assert.equal((await client.request({ type: P.NBD_CMD_TRIM, length: 512 })).error, P.NBD_EPERM);
  assert.equal((await client.request({ type: P.NBD_CMD_WRITE_ZEROES, length: 512 })).error, P.NBD_EPERM);
  assert.equal((await client.read(0, 7)).data!.toString(), 'read me');
  assert.equal(backend.calls.pwrite, 0);
});

test('replies come out of order when a later request finishes first', async () => {
  const inner = new MemoryBackend({ size: MiB });
  const { client } = startSession({ backend: delayedBackend(inner, (off) => (off === 0 ? 60 : 0)) });
  await client.handshake();
  const order: number[] = [];
  const slow = client.read(0, 512).then(() => order.push(0));
  const fast = client.read(4096, 512).then(() => order.push(4096));
  await Promise.all([slow, fast]);
  assert.deepEqual(order, [4096, 0]);
});

test('a read error with simple replies sends no payload and the stream stays in sync', async () => {
  const inner = new MemoryBackend({ size: MiB });
  const failing = { ...delayedBackend(inner, () => 0) };
  failing.pread = async (buf: Buffer, offset: number) => {
    if (offset === 0) throw new BackendError(P.NBD_EIO, 'disk on fire');
    return inner.pread(buf, offset);
  };
  const { client } = startSession({ backend: failing });
  await client.handshake({ structured: false });
  const [bad, good] = await Promise.all([client.read(0, 4096), client.read(4096, 4096)]);
  assert.equal(bad.error, P.NBD_EIO);
  assert.equal(bad.data, undefined);
  assert.equal(good.error, 0);
  assert.equal(good.data!.length, 4096);
});

test('NBD_CMD_DISC: outstanding requests are answered, then the connection closes', async () => {
  const inner = new MemoryBackend({ size: MiB });
  const { client, session } = startSession({ backend: delayedBackend(inner, () => 30) });
  await client.handshake();
  const w = client.write(0, Buffer.from('last words'));
  client.disconnect();
  assert.equal((await w).error, 0);
  await client.waitClosed();
  assert.equal(await session.done, 'client disconnected');
  const check = Buffer.alloc(10);
  await inner.pread(check, 0);
  assert.equal(check.toString(), 'last words');
});

test('NBD_OPT_ABORT is acknowledged and the connection closes', async () => {
  const { client, session } = startSession();
  await client.greeting();
  client.sendClientFlags();
  const r = await client.option(P.NBD_OPT_ABORT, Buffer.from('ignored'));
  assert.equal(r[0]!.type, P.NBD_REP_ACK);
  await client.waitClosed();
  assert.match(await session.done, /aborted/);
});

test('unknown client flags, a bad option magic or a bad request magic end only that connection', async () => {
  {
    const { client, session } = startSession();
    await client.greeting();
    client.sendClientFlags(0x80);
    await client.waitClosed();
    assert.match(await session.done, /unknown client flags/);
  }
  {
    const { client, session } = startSession();
    await client.greeting();
    client.sendClientFlags();
    client.send(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    await client.waitClosed();
    assert.match(await session.done, /protocol error/);
  }
  {
    const { client, session } = startSession();
    await client.handshake();
    const pending = client.read(0, 512);
    const bad = encodeRequest({ flags: 0, type: 0, handleHi: 0, handleLo: 1, offset: 0, length: 1 });
    bad.writeUInt32BE(0xdeadbeef, 0);
    client.send(bad);
    await client.waitClosed();
    await pending.catch(() => undefined);
    assert.match(await session.done, /protocol error/);
  }
});

test('a refused peer gets NBD_REP_ERR_POLICY with the reason on every option; EXPORT_NAME is cut off', async () => {
  {
    const { client } = startSession({ refusal: 'the disk is in use by 10.0.0.2' });
    await client.greeting();
    client.sendClientFlags();
    for (const opt of [P.NBD_OPT_LIST, P.NBD_OPT_GO, P.NBD_OPT_INFO, P.NBD_OPT_STRUCTURED_REPLY]) {
      const r = await client.option(opt, opt === P.NBD_OPT_GO || opt === P.NBD_OPT_INFO ? encodeGoOptionData('', []) : undefined);
      assert.equal(r[0]!.type, P.NBD_REP_ERR_POLICY);
      assert.equal(r[0]!.data.toString(), 'the disk is in use by 10.0.0.2');
    }
    assert.equal((await client.option(P.NBD_OPT_ABORT))[0]!.type, P.NBD_REP_ACK);
  }
  {
    const { client, session } = startSession({ refusal: 'busy' });
    await client.greeting();
    client.sendClientFlags();
    client.send(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
    await client.waitClosed();
    assert.match(await session.done, /refused: busy/);
  }
});

test('backpressure: reading pauses while too many bytes are in flight, and resumes', async () => {
  const inner = new MemoryBackend({ size: 8 * MiB });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = { ...delayedBackend(inner, () => 0) };
  slow.pread = async (buf: Buffer, offset: number) => {
    await gate;
    return inner.pread(buf, offset);
  };
  const { client, transport } = startSession({ backend: slow, maxInflightBytes: MiB });
  await client.handshake();
  const reads = Array.from({ length: 8 }, (_, i) => client.read(i * MiB, MiB));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(transport.paused, true);
  release();
  const replies = await Promise.all(reads);
  assert.ok(replies.every((r) => r.error === 0 && r.data!.length === MiB));
  assert.equal(transport.paused, false);
});

test('shutdown answers in-flight requests, then closes', async () => {
  const inner = new MemoryBackend({ size: MiB });
  const { client, session } = startSession({ backend: delayedBackend(inner, () => 40) });
  await client.handshake();
  const r = client.read(0, 512);
  await new Promise((res) => setTimeout(res, 5));
  session.shutdown();
  assert.equal((await r).error, 0);
  await client.waitClosed();
  assert.equal(await session.done, 'server shut down');
});

test('an option with oversized data is NBD_REP_ERR_TOO_BIG and the session goes on', async () => {
  const { client } = startSession();
  await client.greeting();
  client.sendClientFlags();
  assert.equal((await client.option(P.NBD_OPT_INFO, Buffer.alloc(100_000)))[0]!.type, P.NBD_REP_ERR_TOO_BIG);
  assert.equal((await client.option(P.NBD_OPT_GO, encodeGoOptionData('', []))).at(-1)!.type, P.NBD_REP_ACK);
});

test('when the client hangs up with requests still queued, none of them reaches the backend after `done`', async () => {
  const backend = new MemoryBackend({ size: MiB });
  const { transport, session } = startSession({ backend, parseReplies: false });
  transport.push(Buffer.concat([encodeClientFlags(3), encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', []))]));
  await new Promise((r) => setImmediate(r));
  assert.equal(session.phase, 'transmission');
  const before = backend.calls.pread;
  let atDone = -1;
  void session.done.then(() => (atDone = backend.calls.pread));
  const reqs = [encodeRequest({ flags: 0, type: 99, handleHi: 0, handleLo: 1, offset: 0, length: 0 })];
  for (let i = 0; i < 8; i++) reqs.push(encodeRequest({ flags: 0, type: P.NBD_CMD_READ, handleHi: 0, handleLo: 10 + i, offset: i * 512, length: 512 }));
  transport.push(Buffer.concat(reqs));
  transport.hangUp();
  await session.done;
  await new Promise((r) => setTimeout(r, 10));
  assert.notEqual(atDone, -1);
  assert.equal(backend.calls.pread, atDone, `${backend.calls.pread - atDone} reads after done (${atDone - before} before)`);
});

// --- Bounds: what a hostile but fair client can make the server hold ---------

const tick = (ms = 0): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `count` requests back to back, as one chunk. */
function requestBytes(count: number, f: { type: number; length: number; offset?: (i: number) => number; flags?: number }): Buffer {
  return Buffer.concat(
    Array.from({ length: count }, (_, i) => encodeRequest({ type: f.type, flags: f.flags ?? 0, handleHi: 7, handleLo: i, offset: f.offset?.(i) ?? 0, length: f.length })),
  );
}

test('nothing after NBD_CMD_DISC is acted on, even a write in the same packet', async () => {
  const backend = new MemoryBackend({ size: MiB });
  const { client, session } = startSession({ backend });
  await client.handshake();
  const disc = encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 0, offset: 0, length: 0 });
  const write = encodeRequest({ flags: P.NBD_CMD_FLAG_FUA, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: 5 }, Buffer.from('after'));
  const flush = encodeRequest({ flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 });
  // A read first, in the same packet: it is answered; the write and flush after DISC are not acted on.
  const read = client.batch(() => {
    const r = client.read(0, 512);
    client.send(Buffer.concat([disc, write, flush]));
    return r;
  });
  assert.equal((await read).error, 0);
  assert.equal(await session.done, 'client disconnected');
  await tick(10);
  assert.deepEqual({ pread: backend.calls.pread, pwrite: backend.calls.pwrite, flush: backend.calls.flush }, { pread: 1, pwrite: 0, flush: 0 });
  const check = Buffer.alloc(5, 1);
  await backend.pread(check, 0);
  assert.deepEqual(check, Buffer.alloc(5));
});

test('the budget is checked per request: 40 reads of 8 MiB in one packet do not all start at once', async () => {
  const inner = new MemoryBackend({ size: 16 * MiB });
  let started = 0;
  let running = 0;
  let maxRunning = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const backend = { ...delayedBackend(inner, () => 0) };
  backend.pread = async (buf: Buffer, offset: number) => {
    started++;
    maxRunning = Math.max(maxRunning, ++running);
    await gate;
    await inner.pread(buf, offset);
    running--;
  };
  const { client, transport, session } = startSession({ backend, maxInflightBytes: 16 * MiB });
  await client.handshake();
  const reads = client.batch(() => Array.from({ length: 40 }, (_, i) => client.read((i % 2) * 8 * MiB, 8 * MiB)));
  await tick(50);
  assert.ok(started <= 3, `${started} reads of 8 MiB started before any finished`);
  assert.equal(transport.paused, true);
  release();
  const replies = await Promise.all(reads);
  assert.ok(replies.every((r) => r.error === 0 && r.data!.length === 8 * MiB));
  assert.ok(maxRunning <= 3, `${maxRunning} reads at once`);
  // Held at most: the budget and one request over it.
  assert.ok(session.budget.peak <= 24 * MiB + MiB, `peak ${session.budget.peak}`);
});

test('a write is counted from its header: over budget, its data is left unread', async () => {
  const inner = new MemoryBackend({ size: 8 * MiB });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const backend = { ...delayedBackend(inner, () => 0) };
  backend.pwrite = async (data: readonly Buffer[], offset: number, o) => {
    await gate;
    return inner.pwrite(data, offset, o);
  };
  const { client, transport } = startSession({ backend, maxInflightBytes: MiB });
  await client.handshake();
  const writes = client.batch(() => Array.from({ length: 6 }, (_, i) => client.write(i * MiB, Buffer.alloc(MiB, i + 1))));
  await tick(50);
  assert.equal(transport.paused, true);
  // The payloads past the budget wait, unread, where the socket would keep them.
  assert.ok(transport.unreadBytes >= 4 * MiB, `${transport.unreadBytes} bytes left unread`);
  release();
  assert.ok((await Promise.all(writes)).every((r) => r.error === 0));
  const back = Buffer.alloc(MiB);
  await inner.pread(back, 5 * MiB);
  assert.deepEqual(back, Buffer.alloc(MiB, 6));
});

test('replies a client does not read count: zero-length reads stop being read once the budget is full', async () => {
  const { transport, session } = startSession({ maxInflightBytes: MiB, parseReplies: false });
  transport.push(Buffer.concat([encodeClientFlags(3), encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', []))]));
  await tick();
  assert.equal(session.phase, 'transmission');
  transport.stalled = true;
  const total = 400_000;
  const chunk = requestBytes(2000, { type: P.NBD_CMD_READ, length: 0 });
  for (let sent = 0; sent < total; sent += 2000) transport.push(chunk);
  await tick(100);
  const answered = session.stats.requests.NBD_CMD_READ ?? 0;
  assert.equal(transport.paused, true);
  // 16-byte replies: a 1 MiB budget holds some tens of thousands, not 400,000.
  assert.ok(answered < total / 2, `${answered} of ${total} requests answered while nothing was read`);
  assert.ok(session.budget.used <= 2 * MiB, `${session.budget.used} bytes held`);
  // Once the client reads again, everything is answered.
  transport.unstall();
  for (let i = 0; i < 200 && (session.stats.requests.NBD_CMD_READ ?? 0) < total; i++) await tick(5);
  assert.equal(session.stats.requests.NBD_CMD_READ, total);
});

test('option replies count too: a client that sends options without reading stops being read', async () => {
  const { transport, session } = startSession({ parseReplies: false });
  transport.stalled = true;
  transport.push(encodeClientFlags(3));
  const info = encodeOption(P.NBD_OPT_INFO, encodeGoOptionData('', [P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION]));
  const chunk = Buffer.concat(Array.from({ length: 1000 }, () => info));
  for (let i = 0; i < 200; i++) transport.push(chunk);
  await tick(50);
  assert.equal(transport.paused, true);
  assert.ok(transport.writtenBytes < 4 * MiB, `${transport.writtenBytes} bytes of option replies for 200,000 options`);
  assert.equal(session.phase, 'handshake');
});

test('block status replies count: unread, they stop further requests from being read', async () => {
  const backend = new MemoryBackend({ size: 64 * MiB });
  // Every other 64 KiB page written: 1024 extents.
  for (let p = 0; p < 1024; p += 2) await backend.pwrite([Buffer.alloc(1, 1)], p * 65536, { fua: false });
  const { client, transport, session } = startSession({ backend, maxInflightBytes: 4 * MiB });
  await client.handshake();
  transport.stalled = true;
  const count = 20_000;
  client.send(requestBytes(count, { type: P.NBD_CMD_BLOCK_STATUS, length: 64 * MiB }));
  await tick(100);
  assert.equal(transport.paused, true);
  assert.ok(backend.calls.extents < count / 4, `${backend.calls.extents} of ${count} block status requests run while nothing was read`);
  assert.ok(session.budget.used <= 5 * MiB, `${session.budget.used} bytes held`);
});

test('a block status reply has at most 1,024 descriptors, and the backend is asked for no more', async () => {
  const inner = new MemoryBackend({ size: 64 * MiB });
  const asked: number[] = [];
  const backend = { ...delayedBackend(inner, () => 0) };
  // A backend that ignores the limit: 5,000 extents of 4 KiB, alternating.
  backend.extents = async (_offset: number, _length: number, maxExtents: number) => {
    asked.push(maxExtents);
    return Array.from({ length: 5000 }, (_, i) => ({ length: 4096, flags: i % 2 ? P.NBD_STATE_HOLE : 0 }));
  };
  const { client } = startSession({ backend });
  await client.handshake();
  const all = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 64 * MiB }));
  assert.equal(all.length, 1024);
  assert.ok(all.every(([len]) => len === 4096));
  const one = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 64 * MiB, flags: P.NBD_CMD_FLAG_REQ_ONE }));
  assert.equal(one.length, 1);
  assert.deepEqual(asked, [1024, 1]);
});
