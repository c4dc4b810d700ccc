// Fuzzing the whole NBD server with properties a wrong server would break.
//
// 1. Against a shadow model: random well-formed handshakes, then random
//    requests (valid and not: bad flags, ranges past the end, oversized
//    lengths, unknown commands), cut into random pieces, sometimes with a
//    client that stops reading for a while, sometimes ended by NBD_CMD_DISC
//    with more requests after it. A model of the export and of the spec's
//    rules predicts each reply: the error values allowed for a refused
//    request, the data of every read, the holes block status may claim; at
//    the end the export must equal the model (a refused request changed
//    nothing, nothing after DISC ran), and the connection never held more
//    than its budget and one request.
// 2. Garbage anywhere (client flags, options, requests, random bytes), cut
//    anywhere, hang-ups with requests queued: the server never throws, never
//    touches the backend outside the export or after the session ended,
//    and no request it refused changed the export.
// 3. The real server over a unix socket, four bad clients at a time, then a
//    good one that must still be served.
//
// Short by default (npm test); a long run (see README, "fuzzing"):
//   STIEFEL_FUZZ_RUNS=1000000 npm run test:unit -- nbd-fuzz     (inputs per property)
//   STIEFEL_FUZZ_SECONDS=3600 npm run test:unit -- nbd-fuzz     (repeat until the time is up)
//   STIEFEL_FUZZ_SEED=S STIEFEL_FUZZ_PATH=P                      (replay the input a failure reported)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import fc from 'fast-check';
import type { Backend } from '../../src/nbd/backend';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import * as P from '../../src/nbd/protocol';
import { startNbdServer } from '../../src/nbd/server';
import { silentLogger } from '../../src/log';
import { blockStatusExtents, connectClient, type Reply } from '../helpers/nbd-client';
import { encodeClientFlags, encodeGoOptionData, encodeMetaContextOptionData, encodeOption, encodeRequest } from '../helpers/nbd-encode';
import { startSession } from '../helpers/nbd-session';

const runs = Number(process.env.STIEFEL_FUZZ_RUNS ?? 150);
const seconds = Number(process.env.STIEFEL_FUZZ_SECONDS ?? 0);
const seed = process.env.STIEFEL_FUZZ_SEED === undefined ? undefined : Number(process.env.STIEFEL_FUZZ_SEED);
const replayPath = process.env.STIEFEL_FUZZ_PATH;

/** Runs a property `runs` times, or again and again until STIEFEL_FUZZ_SECONDS are up; returns the number of inputs. */
async function fuzz<T>(arb: fc.Arbitrary<T>, property: (t: T) => Promise<void>): Promise<number> {
  const deadline = seconds > 0 ? Date.now() + seconds * 1000 : 0;
  let total = 0;
  // fast-check keeps every run's value until the end of a batch: batches keep memory flat.
  const batch = Math.min(runs, 10_000);
  do {
    for (let done = 0; done < runs; done += batch) {
      const n = Math.min(batch, runs - done);
      const replay = seed !== undefined ? { seed: seed + total, ...(replayPath ? { path: replayPath } : {}) } : {};
      await fc.assert(fc.asyncProperty(arb, property), { numRuns: n, includeErrorInReport: true, ...replay });
      total += n;
      if (deadline && Date.now() > deadline) break;
    }
  } while (deadline && Date.now() < deadline);
  if (runs >= 10_000) console.log(`fuzz: ${total} inputs`);
  return total;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

// ---------------------------------------------------------------------------
// 1. The shadow model

const SIZE = 512 * 1024;
const MAX_BLOCK = 64 * 1024;
const HZ = P.NBD_STATE_HOLE | P.NBD_STATE_ZERO;

const COMMANDS = [P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS];
const WRITES = [P.NBD_CMD_WRITE, P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES];

interface Negotiated {
  structured: boolean;
  blockStatus: boolean;
  readOnly: boolean;
}

interface Req {
  type: number;
  flags: number;
  offset: number;
  length: number;
  /** A write's data: `length` bytes of this value. */
  fill: number;
}

/** The error values the spec allows for this request; empty when it must succeed. */
function allowedErrors(r: Req, n: Negotiated): Set<number> {
  const errs = new Set<number>();
  if (!COMMANDS.includes(r.type)) return errs.add(P.NBD_EINVAL);
  let allowed = n.readOnly ? 0 : P.NBD_CMD_FLAG_FUA;
  if (r.type === P.NBD_CMD_READ && n.structured) allowed |= P.NBD_CMD_FLAG_DF;
  if (r.type === P.NBD_CMD_WRITE_ZEROES) allowed |= P.NBD_CMD_FLAG_NO_HOLE | (n.readOnly ? 0 : P.NBD_CMD_FLAG_FAST_ZERO);
  if (r.type === P.NBD_CMD_BLOCK_STATUS) allowed |= P.NBD_CMD_FLAG_REQ_ONE;
  if (r.flags & ~allowed) errs.add(P.NBD_EINVAL);
  if (r.type === P.NBD_CMD_FLUSH) {
    if (r.offset !== 0 || r.length !== 0) errs.add(P.NBD_EINVAL);
    return errs;
  }
  if (WRITES.includes(r.type) && n.readOnly) {
    errs.add(P.NBD_EPERM);
    // Trim and write zeroes are not advertised on a read-only export.
    if (r.type !== P.NBD_CMD_WRITE) errs.add(P.NBD_EINVAL);
  }
  if (r.type === P.NBD_CMD_BLOCK_STATUS && (!n.blockStatus || r.length === 0)) errs.add(P.NBD_EINVAL);
  if ((r.type === P.NBD_CMD_READ || r.type === P.NBD_CMD_WRITE) && r.length > MAX_BLOCK) errs.add(P.NBD_EINVAL);
  if (r.offset > SIZE || r.length > SIZE - r.offset) errs.add(r.type === P.NBD_CMD_WRITE || r.type === P.NBD_CMD_WRITE_ZEROES ? P.NBD_ENOSPC : P.NBD_EINVAL);
  return errs;
}

const ZEROES = Buffer.alloc(SIZE);

/** The export as the model knows it: bytes, and which of them are defined (not trimmed since). */
class Shadow {
  readonly bytes = Buffer.alloc(SIZE);
  readonly defined = new Uint8Array(SIZE).fill(1);

  /**
   * The first byte in [offset, offset + actual.length) where `actual` (from
   * `offset`) differs from `model` (from `modelOffset`: the export itself by
   * default) and the model knows the byte; -1 when none.
   */
  mismatch(actual: Uint8Array, offset: number, model: Uint8Array = this.bytes, modelOffset = 0): number {
    const end = offset + actual.length;
    for (let pos = offset; pos < end; ) {
      let undef = this.defined.indexOf(0, pos);
      if (undef < 0 || undef > end) undef = end;
      if (undef > pos && Buffer.compare(actual.subarray(pos - offset, undef - offset), model.subarray(pos - modelOffset, undef - modelOffset)) !== 0) {
        for (let b = pos; b < undef; b++) if (actual[b - offset] !== model[b - modelOffset]) return b;
      }
      let def = this.defined.indexOf(1, undef);
      if (def < 0 || def > end) def = end;
      pos = def;
    }
    return -1;
  }

  /** Applies a successful request; checks what it answered. */
  apply(r: Req, reply: Reply, n: Negotiated): void {
    const end = r.offset + r.length;
    switch (r.type) {
      case P.NBD_CMD_WRITE:
        this.bytes.fill(r.fill, r.offset, end);
        this.defined.fill(1, r.offset, end);
        return;
      case P.NBD_CMD_WRITE_ZEROES:
        this.bytes.fill(0, r.offset, end);
        this.defined.fill(1, r.offset, end);
        return;
      case P.NBD_CMD_TRIM:
        // "a client MUST NOT make any assumptions about the contents of the export affected by this command"
        this.defined.fill(0, r.offset, end);
        return;
      case P.NBD_CMD_READ: {
        assert.equal(reply.structured, n.structured, 'a read is answered in the negotiated form');
        assert.equal(reply.data!.length, r.length);
        const bad = this.mismatch(reply.data!, r.offset);
        if (bad >= 0) assert.fail(`read ${r.offset}+${r.length}: byte ${bad} is ${reply.data![bad - r.offset]}, the export holds ${this.bytes[bad]}`);
        return;
      }
      case P.NBD_CMD_BLOCK_STATUS: {
        const extents = blockStatusExtents(reply);
        const reqOne = (r.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
        assert.ok(extents.length >= 1, 'at least one descriptor');
        if (reqOne) assert.equal(extents.length, 1);
        let pos = r.offset;
        extents.forEach(([len, flags], i) => {
          assert.ok(len > 0, 'descriptor lengths are nonzero');
          // Only the last may go past the request, and never with REQ_ONE.
          if (i < extents.length - 1 || reqOne) assert.ok(pos + len <= end, 'descriptors stay within the request');
          if (flags & P.NBD_STATE_ZERO) {
            const stop = Math.min(pos + len, SIZE);
            // The model's bytes must read as zeroes there (where it knows them).
            const bad = this.mismatch(ZEROES.subarray(0, stop - pos), pos, this.bytes, 0);
            if (bad >= 0) assert.fail(`block status claims zeroes at ${bad}, the export holds ${this.bytes[bad]}`);
          }
          pos += len;
        });
        return;
      }
      default:
    }
  }
}

const arbOffset = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 511, 512, 4096, SIZE - 4096, SIZE - 1, SIZE, SIZE + 1, 2 ** 32, 2 ** 53 - 1, 2 ** 63) },
  { weight: 5, arbitrary: fc.integer({ min: 0, max: SIZE }) },
);
const arbLength = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(0, 1, 511, 512, 4096, MAX_BLOCK, MAX_BLOCK + 1, SIZE, 0xffffffff) },
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 70_000 }) },
);
/** Requests without data (block status, trim, zeroing, cache) often span many pages. */
const arbLongLength = fc.oneof(arbLength, fc.integer({ min: 0, max: SIZE }));
const arbReq: fc.Arbitrary<Req> = fc
  .oneof(
    { weight: 5, arbitrary: fc.constantFrom(P.NBD_CMD_READ, P.NBD_CMD_WRITE) },
    { weight: 4, arbitrary: fc.constantFrom(P.NBD_CMD_TRIM, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS, P.NBD_CMD_FLUSH, P.NBD_CMD_CACHE) },
    { weight: 1, arbitrary: fc.integer({ min: 8, max: 0xffff }) },
  )
  .chain((type) =>
    fc.record({
      type: fc.constant(type),
      flags: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 3, arbitrary: fc.integer({ min: 0, max: 31 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) }),
      offset: arbOffset,
      // A write carries all its data (over the maximum block size too), so the stream stays in step.
      length: type === P.NBD_CMD_WRITE ? fc.integer({ min: 0, max: 70_000 }) : type === P.NBD_CMD_READ ? arbLength : arbLongLength,
      fill: fc.integer({ min: 1, max: 255 }),
    }),
  );

const arbModelScenario = fc.record({
  noZeroes: fc.boolean(),
  /** Options that change nothing, before the real ones. */
  extras: fc.array(
    fc.constantFrom<[number, Buffer]>(
      [P.NBD_OPT_LIST, Buffer.alloc(0)],
      [P.NBD_OPT_INFO, encodeGoOptionData('disk', [0, 1, 2, 3, 99])],
      [P.NBD_OPT_LIST_META_CONTEXT, encodeMetaContextOptionData('', [])],
      [99, Buffer.from('what?')],
      [P.NBD_OPT_STARTTLS, Buffer.alloc(0)],
    ),
    { maxLength: 3 },
  ),
  // Mostly as modern clients do, so that block status is often allowed.
  structured: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  meta: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  enter: fc.constantFrom('go-empty', 'go-name', 'export-name'),
  readOnly: fc.boolean(),
  requests: fc.array(arbReq, { maxLength: 30 }),
  /** NBD_CMD_DISC after the requests, then these (which must never run). */
  disc: fc.option(fc.array(arbReq, { minLength: 1, maxLength: 4 }), { nil: undefined }),
  /** The client reads nothing for this many turns after sending its requests. */
  stallTurns: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 20 }) }),
  budget: fc.constantFrom(64 * 1024, 256 * 1024, 4 * 1024 * 1024),
  cuts: fc.array(fc.nat(), { maxLength: 8 }),
});

type ModelScenario = typeof arbModelScenario extends fc.Arbitrary<infer T> ? T : never;

async function runModelScenario(s: ModelScenario): Promise<void> {
  const inner = new MemoryBackend({ size: SIZE });
  // Cut every send at the scenario's points; pieces arrive one turn apart, in order.
  const fifo: Buffer[] = [];
  let delivering = false;
  const deliver = (bytes: Buffer, push: (b: Buffer) => void): void => {
    const points = [...new Set(s.cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
    let prev = 0;
    for (const p of [...points, bytes.length]) {
      if (p > prev) fifo.push(bytes.subarray(prev, p));
      prev = p;
    }
    if (delivering) return;
    delivering = true;
    void (async () => {
      while (fifo.length > 0) {
        await tick();
        push(fifo.shift()!);
      }
      delivering = false;
    })();
  };
  const h = startSession({ backend: inner, readOnly: s.readOnly, blockSize: { maximum: MAX_BLOCK }, maxInflightBytes: s.budget, deliver });
  const { client, transport, session } = h;
  const n: Negotiated = { structured: false, blockStatus: false, readOnly: s.readOnly };

  await client.greeting();
  client.sendClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | (s.noZeroes ? P.NBD_FLAG_C_NO_ZEROES : 0));
  for (const [opt, data] of s.extras) {
    const r = await client.option(opt, data);
    assert.ok(r.at(-1)!.type === P.NBD_REP_ACK || r.at(-1)!.type >= 0x80000000);
  }
  if (s.structured) {
    assert.equal((await client.option(P.NBD_OPT_STRUCTURED_REPLY)).at(-1)!.type, P.NBD_REP_ACK);
    n.structured = true;
  }
  if (s.meta) {
    const r = await client.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData('disk', [P.BASE_ALLOCATION]));
    // Without structured replies the spec makes it an error; with them base:allocation is selected.
    assert.equal(r.some((x) => x.type === P.NBD_REP_META_CONTEXT), s.structured);
    n.blockStatus = s.structured;
  }
  let flags: number;
  if (s.enter === 'export-name') flags = (await client.exportName('disk')).flags;
  else {
    const go = await client.option(P.NBD_OPT_GO, encodeGoOptionData(s.enter === 'go-name' ? 'disk' : '', [P.NBD_INFO_BLOCK_SIZE]));
    assert.equal(go.at(-1)!.type, P.NBD_REP_ACK);
    flags = go.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT)!.data.readUInt16BE(10);
  }
  assert.equal((flags & P.NBD_FLAG_READ_ONLY) !== 0, s.readOnly);

  // Every request in one batch (cut by `deliver`), DISC and what follows it included.
  transport.stalled = s.stallTurns > 0;
  const send = (r: Req): Promise<Reply> => {
    const p = client.request({ type: r.type, flags: r.flags, offset: r.offset, length: r.length }, r.type === P.NBD_CMD_WRITE ? Buffer.alloc(r.length, r.fill) : undefined);
    // Awaited below, in order; a rejection before then is not unhandled.
    p.catch(() => undefined);
    return p;
  };
  const { replies, after } = client.batch(() => {
    const replies = s.requests.map(send);
    let after: Array<Promise<Reply>> = [];
    if (s.disc) {
      client.disconnect();
      after = s.disc.map(send);
    }
    return { replies, after };
  });
  for (let i = 0; i < s.stallTurns; i++) await tick();
  transport.unstall();

  const shadow = new Shadow();
  for (const [i, r] of s.requests.entries()) {
    const reply = await replies[i]!;
    const errs = allowedErrors(r, n);
    if (errs.size > 0) {
      assert.ok(errs.has(reply.error), `request ${i} ${P.commandName(r.type)} ${r.offset}+${r.length} flags 0x${r.flags.toString(16)}: error ${reply.error}, allowed ${[...errs]}`);
    } else {
      assert.equal(reply.error, 0, `request ${i} ${P.commandName(r.type)} ${r.offset}+${r.length} flags 0x${r.flags.toString(16)}: ${reply.message ?? ''}`);
      shadow.apply(r, reply, n);
    }
  }
  // Requests after DISC get no reply: the connection just closes.
  for (const p of after) await assert.rejects(p, /connection closed/);
  if (!s.disc) transport.hangUp();
  await session.done;
  assert.equal(session.stats.inFlight, 0);
  // The export is what the model says: nothing refused and nothing after DISC changed it.
  const final = Buffer.alloc(SIZE);
  await inner.pread(final, 0);
  const bad = shadow.mismatch(final, 0);
  if (bad >= 0) assert.fail(`byte ${bad} of the export is ${final[bad]}, the model says ${shadow.bytes[bad]}`);
  // Never more held than the budget and one request (a block status is the largest: ~106 KiB).
  assert.ok(session.budget.peak <= s.budget + 256 * 1024, `held ${session.budget.peak} with a budget of ${s.budget}`);
}

test('fuzz: every reply and the final export match a shadow model of the spec', async () => {
  assert.ok((await fuzz(arbModelScenario, runModelScenario)) >= runs);
});

// ---------------------------------------------------------------------------
// 2. Garbage anywhere

const GARBAGE_SIZE = 1024 * 1024;

interface Mutation {
  call: 'pwrite' | 'trim' | 'writeZeroes';
  offset: number;
  length: number;
}

/** Records every backend call outside the export, oversized, or after `state.closed`, and every change made. */
function guarded(inner: Backend, violations: string[], mutations: Mutation[], state: { closed: boolean } = { closed: false }): Backend {
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
      if (buf.length > 32 * 1024 * 1024) violations.push(`pread of ${buf.length} bytes`);
      return inner.pread(buf, offset);
    },
    pwrite(data, offset, o) {
      const n = data.reduce((a, b) => a + b.length, 0);
      check('pwrite', offset, n);
      mutations.push({ call: 'pwrite', offset, length: n });
      return inner.pwrite(data, offset, o);
    },
    flush: () => inner.flush(),
    trim(offset, length, o) {
      check('trim', offset, length);
      mutations.push({ call: 'trim', offset, length });
      return inner.trim(offset, length, o);
    },
    writeZeroes(offset, length, o) {
      check('writeZeroes', offset, length);
      mutations.push({ call: 'writeZeroes', offset, length });
      return inner.writeZeroes(offset, length, o);
    },
    cache(offset, length) {
      check('cache', offset, length);
      return inner.cache(offset, length);
    },
    extents(offset, length, maxExtents) {
      check('extents', offset, length);
      if (maxExtents > 1024) violations.push(`extents asked for ${maxExtents}`);
      return inner.extents(offset, length, maxExtents);
    },
    close: () => inner.close(),
  };
}

const arbGarbageOffset = fc.oneof(
  fc.constantFrom(0, 1, 511, 512, GARBAGE_SIZE - 4096, GARBAGE_SIZE - 1, GARBAGE_SIZE, GARBAGE_SIZE + 1, 2 ** 32, 2 ** 53 - 1, 2 ** 63),
  fc.integer({ min: 0, max: GARBAGE_SIZE }),
);
const arbGarbageLength = fc.oneof(
  fc.constantFrom(0, 1, 512, 4096, 65536, GARBAGE_SIZE, 32 * 1024 * 1024, 32 * 1024 * 1024 + 1, 0x7fffffff, 0xffffffff),
  fc.integer({ min: 0, max: 70000 }),
);

interface Sent {
  type: number;
  offset: number;
  length: number;
  handleLo: number;
}

const arbOptionPiece: fc.Arbitrary<Buffer> = fc.oneof(
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

const arbRequestPiece: fc.Arbitrary<{ bytes: Buffer; sent: Sent }> = fc
  .record({
    type: fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 0xffff })),
    flags: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 0xffff })),
    offset: arbGarbageOffset,
    length: arbGarbageLength,
    handleLo: fc.nat(),
    payload: fc.boolean(),
  })
  .filter((r) => r.type !== P.NBD_CMD_DISC)
  .map((r) => {
    const req = { type: r.type, flags: r.flags, offset: Math.min(r.offset, 2 ** 64 - 1), length: r.length, handleHi: 1, handleLo: r.handleLo };
    // A write carries its data when small enough to build here; a huge one claims more than it sends.
    const payload = r.type === P.NBD_CMD_WRITE && r.payload && r.length <= 70000 ? Buffer.alloc(r.length, 0x5a) : undefined;
    return { bytes: encodeRequest(req, payload), sent: { type: r.type, offset: req.offset, length: r.length, handleLo: r.handleLo } };
  });

// Mostly well-formed up to the transmission phase, so that most runs reach
// the request handling; every layer still gets broken input now and then.
const arbGarbageScenario = fc.record({
  clientFlags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(3, 1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) }),
  options: fc.array(arbOptionPiece, { maxLength: 5 }),
  enter: fc.oneof(
    { weight: 4, arbitrary: fc.constant(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [3]))) },
    { weight: 2, arbitrary: fc.constant(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('disk', []))) },
    { weight: 2, arbitrary: fc.constant(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('disk'))) },
    { weight: 1, arbitrary: fc.constant(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope'))) },
  ),
  requests: fc.array(
    fc.oneof({ weight: 15, arbitrary: arbRequestPiece }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 30 }).map((b) => ({ bytes: Buffer.from(b), sent: undefined })) }),
    { maxLength: 25 },
  ),
  cuts: fc.array(fc.nat(), { maxLength: 12 }),
  readOnly: fc.boolean(),
  /** Hang up in the same turn as the last bytes, with requests still queued. */
  hangUpEarly: fc.boolean(),
  refusal: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant('not you') }),
});

type GarbageScenario = typeof arbGarbageScenario extends fc.Arbitrary<infer T> ? T : never;

const streamOf = (s: GarbageScenario): Buffer => Buffer.concat([encodeClientFlags(s.clientFlags), ...s.options, s.enter, ...s.requests.map((r) => r.bytes)]);

/** Error replies the server sent, counted by handle (each written buffer is one message). */
function errorsByHandle(written: readonly Buffer[]): Map<number, number> {
  const errors = new Map<number, number>();
  const count = (h: number): void => void errors.set(h, (errors.get(h) ?? 0) + 1);
  for (const b of written) {
    if (b.length < 16) continue;
    const magic = b.readUInt32BE(0);
    if (magic === P.NBD_SIMPLE_REPLY_MAGIC && b.readUInt32BE(4) !== 0) count(b.readUInt32BE(12));
    if (magic === P.NBD_STRUCTURED_REPLY_MAGIC && b.length >= 20 && b.readUInt16BE(6) & 0x8000) count(b.readUInt32BE(12));
  }
  return errors;
}

async function runGarbageScenario(s: GarbageScenario): Promise<void> {
  const violations: string[] = [];
  const mutations: Mutation[] = [];
  const state = { closed: false };
  const backend = guarded(new MemoryBackend({ size: GARBAGE_SIZE }), violations, mutations, state);
  const budget = 4 * 1024 * 1024;
  const h = startSession({ backend, readOnly: s.readOnly, refusal: s.refusal, maxInflightBytes: budget, parseReplies: false });
  // As the server does: once `done` resolves it may close the backend.
  void h.session.done.then(() => (state.closed = true));
  const stream = streamOf(s);
  // Hanging up early: everything in one chunk, so requests are still queued.
  const points = s.hangUpEarly ? [] : [...new Set(s.cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  const ends = [...points, stream.length];
  for (const [i, p] of ends.entries()) {
    if (p > prev) h.transport.push(stream.subarray(prev, p));
    prev = p;
    if (s.hangUpEarly && i === ends.length - 1) break;
    await tick();
  }
  if (!s.hangUpEarly) for (let i = 0; i < 5; i++) await tick();
  h.transport.hangUp();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([h.session.done, new Promise<string>((_, rej) => (timer = setTimeout(() => rej(new Error('session did not end')), 5000)))]);
  clearTimeout(timer);
  // Anything still scheduled would show up as a call after the end.
  for (let i = 0; i < 3; i++) await tick();
  assert.deepEqual(violations, []);
  assert.equal(h.session.stats.inFlight, 0);
  // A refused request changed nothing: every change matches a request the
  // server did not answer with an error (answered with success, or cut off).
  // Handles may repeat in a stream: a handle counts as refused when every
  // request sent with it got an error reply.
  const errors = errorsByHandle(h.transport.written);
  const uses = new Map<number, number>();
  for (const r of s.requests) if (r.sent) uses.set(r.sent.handleLo, (uses.get(r.sent.handleLo) ?? 0) + 1);
  const refused = (handle: number): boolean => (errors.get(handle) ?? 0) >= (uses.get(handle) ?? 0);
  const call = { [P.NBD_CMD_WRITE]: 'pwrite', [P.NBD_CMD_TRIM]: 'trim', [P.NBD_CMD_WRITE_ZEROES]: 'writeZeroes' } as Record<number, string>;
  for (const m of mutations) {
    const senders = s.requests.flatMap((r) => (r.sent && call[r.sent.type] === m.call && r.sent.offset === m.offset && r.sent.length === m.length ? [r.sent] : []));
    assert.ok(
      senders.some((r) => !refused(r.handleLo)),
      `${m.call} ${m.offset}+${m.length} was made for a request the server refused (or never sent)`,
    );
  }
  assert.ok(h.session.budget.peak <= budget + 33 * 1024 * 1024, `held ${h.session.budget.peak}`);
}

test('fuzz: garbage anywhere never breaks the server, and no refused request changes the export', async () => {
  assert.ok((await fuzz(arbGarbageScenario, runGarbageScenario)) >= runs);
});

// ---------------------------------------------------------------------------
// 3. The real server

test('fuzz: the real server over a unix socket keeps serving good clients after bad ones', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf2-fuzz-'));
  const violations: string[] = [];
  const inner = new MemoryBackend({ size: GARBAGE_SIZE });
  const server = await startNbdServer(
    { exports: [{ name: 'disk', backend: guarded(inner, violations, []) }], listen: { kind: 'unix', path: join(dir, 'nbd.sock') }, maxInflightBytes: 4 * 1024 * 1024 },
    { log: silentLogger },
  );
  try {
    const samples = fc.sample(arbGarbageScenario, Math.max(20, Math.min(2000, Math.floor(runs / 5))));
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
                sock.write(streamOf(s));
                setTimeout(() => sock.end(), 20);
                setTimeout(() => sock.destroy(), 500);
              });
            }),
        ),
      );
    }
    const { client, socket } = await connectClient({ path: join(dir, 'nbd.sock') });
    const { size } = await client.handshake({ name: 'disk' });
    assert.equal(size, GARBAGE_SIZE);
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
