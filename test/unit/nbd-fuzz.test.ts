// Fuzzing the whole NBD server: random mixes of valid and broken options and
// requests, garbage bytes and random chunking, first against one session
// over an in-memory transport (many runs, fast), then against the real
// server (startNbdServer) over a unix socket. The server must never throw,
// never touch the backend outside the export, never hold more than its
// bounds, and must keep serving well-behaved clients afterwards.
//
// Short by default; a long session:
//   STIEFEL_FUZZ_RUNS=20000 npm run test:unit -- nbd-fuzz
//   STIEFEL_FUZZ_SECONDS=600 npm run test:unit -- nbd-fuzz   (runs until the time is up)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import fc from 'fast-check';
import type { Backend } from '../../src/nbd/backend';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { encodeClientFlags, encodeGoOptionData, encodeMetaContextOptionData, encodeOption, encodeRequest } from '../helpers/nbd-encode';
import * as P from '../../src/nbd/protocol';
import { startNbdServer } from '../../src/nbd/server';
import { silentLogger } from '../../src/log';
import { connectClient } from '../helpers/nbd-client';
import { startSession } from '../helpers/nbd-session';

const SIZE = 1024 * 1024;
const MAX_BLOCK = 32 * 1024 * 1024;
const runs = Number(process.env.STIEFEL_FUZZ_RUNS ?? 150);
const seconds = Number(process.env.STIEFEL_FUZZ_SECONDS ?? 0);

/** Records every backend call that would be outside the export or oversized, or comes after `state.closed`. */
function guarded(inner: Backend, violations: string[], state: { closed: boolean } = { closed: false }): Backend {
  const check = (what: string, offset: number, length: number): void => {
    if (state.closed) violations.push(`${what} after the session ended`);
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= inner.size)) {
      violations.push(`${what} ${offset}+${length}`);
    }
  };
  return {
    size: inner.size,
    capabilities: inner.capabilities,
    description: inner.description,
    pread(buf, offset) {
      check('pread', offset, buf.length);
      if (buf.length > MAX_BLOCK) violations.push(`pread of ${buf.length} bytes`);
      return inner.pread(buf, offset);
    },
    pwrite(data, offset, o) {
      const n = data.reduce((a, b) => a + b.length, 0);
      check('pwrite', offset, n);
      return inner.pwrite(data, offset, o);
    },
    flush: () => inner.flush(),
    trim(offset, length, o) {
      check('trim', offset, length);
      return inner.trim(offset, length, o);
    },
    writeZeroes(offset, length, o) {
      check('writeZeroes', offset, length);
      return inner.writeZeroes(offset, length, o);
    },
    cache(offset, length) {
      check('cache', offset, length);
      return inner.cache(offset, length);
    },
    extents(offset, length, maxExtents) {
      check('extents', offset, length);
      return inner.extents(offset, length, maxExtents);
    },
    close: () => inner.close(),
  };
}

const arbOffset = fc.oneof(
  fc.constantFrom(0, 1, 511, 512, SIZE - 4096, SIZE - 1, SIZE, SIZE + 1, 2 ** 32, 2 ** 53 - 1, 2 ** 63),
  fc.integer({ min: 0, max: SIZE }),
);
const arbLength = fc.oneof(
  fc.constantFrom(0, 1, 512, 4096, 65536, SIZE, MAX_BLOCK, MAX_BLOCK + 1, 0x7fffffff, 0xffffffff),
  fc.integer({ min: 0, max: 70000 }),
);

type Piece = Buffer;

const arbOptionPiece: fc.Arbitrary<Piece> = fc.oneof(
  { weight: 4, arbitrary: fc.constant(encodeOption(P.NBD_OPT_STRUCTURED_REPLY)) },
  { weight: 1, arbitrary: fc.constant(encodeOption(P.NBD_OPT_LIST)) },
  { weight: 4, arbitrary: fc.constant(encodeOption(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData('', [P.BASE_ALLOCATION]))) },
  { weight: 1, arbitrary: fc.constant(encodeOption(P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextOptionData('', []))) },
  { weight: 1, arbitrary: fc.constant(encodeOption(P.NBD_OPT_INFO, encodeGoOptionData('disk', [0, 1, 2, 3, 99]))) },
  {
    weight: 2,
    arbitrary: fc
      .record({ opt: fc.integer({ min: 0, max: 20 }).filter((o) => o !== P.NBD_OPT_ABORT && o !== P.NBD_OPT_EXPORT_NAME && o !== P.NBD_OPT_GO), data: fc.uint8Array({ maxLength: 64 }) })
      .map((o) => encodeOption(o.opt, o.data)),
  },
  { weight: 1, arbitrary: fc.record({ opt: fc.integer({ min: 0, max: 20 }), data: fc.uint8Array({ maxLength: 64 }) }).map((o) => encodeOption(o.opt, o.data)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)) },
);

const arbRequestPiece: fc.Arbitrary<Piece> = fc
  .record({
    type: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 0xffff })),
    flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 0xffff })),
    offset: arbOffset,
    length: arbLength,
    handleLo: fc.nat(),
    payload: fc.boolean(),
  })
  .filter((r) => r.type !== P.NBD_CMD_DISC)
  .map((r) => {
    const req = { type: r.type, flags: r.flags, offset: Math.min(r.offset, 2 ** 64 - 1), length: r.length, handleHi: 1, handleLo: r.handleLo };
    // A write carries its data when small enough to build here; a huge one claims more than it sends.
    const payload = r.type === P.NBD_CMD_WRITE && r.payload && r.length <= 70000 ? Buffer.alloc(r.length, 0x5a) : undefined;
    return encodeRequest(req, payload);
  });

// Mostly well-formed up to the transmission phase, so that most runs reach
// the request handling; every layer still gets broken input now and then.
const arbScenario = fc.record({
  clientFlags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(3, 1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
  options: fc.array(arbOptionPiece, { maxLength: 5 }),
  enter: fc.oneof(
    { weight: 4, arbitrary: fc.constant(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [3]))) },
    { weight: 2, arbitrary: fc.constant(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('disk', []))) },
    { weight: 2, arbitrary: fc.constant(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('disk'))) },
    { weight: 1, arbitrary: fc.constant(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope'))) },
  ),
  requests: fc.array(fc.oneof({ weight: 15, arbitrary: arbRequestPiece }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 30 }).map((b) => Buffer.from(b)) }), {
    maxLength: 25,
  }),
  cuts: fc.array(fc.nat(), { maxLength: 12 }),
  readOnly: fc.boolean(),
  /** Hang up in the same turn as the last bytes, with requests still queued. */
  hangUpEarly: fc.boolean(),
  refusal: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant('not you') }),
});

type Scenario = typeof arbScenario extends fc.Arbitrary<infer T> ? T : never;

async function runScenario(s: Scenario): Promise<void> {
  const violations: string[] = [];
  const state = { closed: false };
  const backend = guarded(new MemoryBackend({ size: SIZE }), violations, state);
  const h = startSession({ backend, readOnly: s.readOnly, refusal: s.refusal, maxInflightBytes: 4 * 1024 * 1024, parseReplies: false });
  // As the server does: once `done` resolves it may close the backend.
  void h.session.done.then(() => (state.closed = true));
  const stream = Buffer.concat([encodeClientFlags(s.clientFlags), ...s.options, s.enter, ...s.requests]);
  // Hanging up early: everything in one chunk, so requests are still queued.
  const points = s.hangUpEarly ? [] : [...new Set(s.cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  const ends = [...points, stream.length];
  for (const [i, p] of ends.entries()) {
    if (p > prev) h.transport.push(stream.subarray(prev, p));
    prev = p;
    if (s.hangUpEarly && i === ends.length - 1) break;
    await new Promise((r) => setImmediate(r));
  }
  if (!s.hangUpEarly) await new Promise((r) => setTimeout(r, 1));
  h.transport.hangUp();
  const reason = await Promise.race([h.session.done, new Promise<string>((_, rej) => setTimeout(() => rej(new Error('session did not end')), 5000))]);
  assert.equal(typeof reason, 'string');
  await new Promise((r) => setTimeout(r, 2));
  assert.deepEqual(violations, []);
  assert.equal(h.session.stats.inFlight, 0);
}

test('fuzz: one session over an in-memory transport survives random and broken input', async () => {
  const deadline = seconds > 0 ? Date.now() + seconds * 1000 : 0;
  let total = 0;
  do {
    await fc.assert(fc.asyncProperty(arbScenario, runScenario), { numRuns: runs });
    total += runs;
  } while (deadline && Date.now() < deadline);
  assert.ok(total >= runs);
});

test('fuzz: the real server over a unix socket keeps serving good clients after bad ones', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf2-fuzz-'));
  const violations: string[] = [];
  const inner = new MemoryBackend({ size: SIZE });
  const server = await startNbdServer(
    { exports: [{ name: 'disk', backend: guarded(inner, violations) }], listen: { kind: 'unix', path: join(dir, 'nbd.sock') }, maxInflightBytes: 4 * 1024 * 1024 },
    { log: silentLogger },
  );
  try {
    const samples = fc.sample(arbScenario, Math.max(20, Math.floor(runs / 5)));
    for (let i = 0; i < samples.length; i += 4) {
      // Four bad clients at once, each sending its stream in random pieces.
      await Promise.all(
        samples.slice(i, i + 4).map(
          (s) =>
            new Promise<void>((resolve) => {
              const sock = net.connect({ path: join(dir, 'nbd.sock') });
              sock.on('error', () => undefined);
              sock.on('close', () => resolve());
              sock.on('data', () => undefined);
              sock.on('connect', () => {
                sock.write(Buffer.concat([encodeClientFlags(s.clientFlags), ...s.options, s.enter, ...s.requests]));
                setTimeout(() => sock.end(), 20);
                setTimeout(() => sock.destroy(), 500);
              });
            }),
        ),
      );
    }
    const { client, socket } = await connectClient({ path: join(dir, 'nbd.sock') });
    const { size } = await client.handshake({ name: 'disk' });
    assert.equal(size, SIZE);
    const data = Buffer.alloc(65536, 0x3c);
    assert.equal((await client.write(4096, data)).error, 0);
    assert.deepEqual((await client.read(4096, 65536)).data, data);
    client.disconnect();
    await client.waitClosed();
    socket.destroy();
    assert.deepEqual(violations, []);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
