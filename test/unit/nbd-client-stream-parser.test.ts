// The incremental parser of the client's byte stream: any split of the
// stream gives the same messages, arbitrary bytes never throw or hold
// unbounded data, and a pause stops it right after the message it was asked
// in, with the rest of the bytes kept for resume().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { NbdRequest } from '../../src/nbd/codec';
import { ClientStreamParser, type ClientStreamHandler } from '../../src/nbd/client-stream-parser';
import * as P from '../../src/nbd/protocol';
import { encodeClientFlags, encodeGoOptionData, encodeOption, encodeRequest } from '../helpers/nbd-encode';

/** What the parser reported, one object per handler call. */
type ClientMessage =
  | { kind: 'client-flags'; flags: number }
  | { kind: 'option'; option: number; data: Buffer }
  | { kind: 'option-too-big'; option: number; length: number }
  | { kind: 'payload-start'; length: number }
  | { kind: 'request'; request: NbdRequest; payload: readonly Buffer[] | null }
  | { kind: 'protocol-error'; message: string };

function recorder(onMessage: (m: ClientMessage) => void): ClientStreamHandler {
  return {
    clientFlags: (flags) => onMessage({ kind: 'client-flags', flags }),
    option: (option, data) => onMessage({ kind: 'option', option, data }),
    optionTooBig: (option, length) => onMessage({ kind: 'option-too-big', option, length }),
    payloadStart: (length) => onMessage({ kind: 'payload-start', length }),
    request: (request, payload) => onMessage({ kind: 'request', request, payload }),
    protocolError: (message) => onMessage({ kind: 'protocol-error', message }),
  };
}

const arbRequest = fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== P.NBD_CMD_WRITE),
  handleHi: fc.integer({ min: 0, max: 0xffffffff }),
  handleLo: fc.integer({ min: 0, max: 0xffffffff }),
  offset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  length: fc.integer({ min: 0, max: 0xffffffff }),
});

/** Splits `bytes` at the given cut points and pushes the pieces. */
function pushSplit(parser: ClientStreamParser, bytes: Buffer, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    if (p > prev) parser.push(bytes.subarray(prev, p));
    prev = p;
  }
}

function collect(maxPayload = 1 << 20): { parser: ClientStreamParser; messages: ClientMessage[] } {
  const messages: ClientMessage[] = [];
  const parser = new ClientStreamParser(
    { maxOptionData: 65536, maxPayload },
    recorder((m) => {
      messages.push(m);
      // Like the session: GO ends the handshake.
      if (m.kind === 'option' && m.option === P.NBD_OPT_GO) parser.startTransmission();
    }),
  );
  return { parser, messages };
}

test('property: requests survive any split of the byte stream', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(arbRequest, fc.record({ offset: fc.nat(), payload: fc.uint8Array({ maxLength: 300 }) })), { maxLength: 20 }),
      fc.array(fc.nat(), { maxLength: 30 }),
      (items, cuts) => {
        const { parser, messages } = collect();
        parser.push(encodeClientFlags(3));
        parser.push(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [])));
        const expected: Array<{ request: NbdRequest; payload: Buffer | null }> = [];
        const bytes: Buffer[] = [];
        items.forEach((it, i) => {
          if ('payload' in it) {
            const request = { flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: i, offset: it.offset, length: it.payload.length };
            bytes.push(encodeRequest(request, it.payload));
            expected.push({ request, payload: Buffer.from(it.payload) });
          } else {
            bytes.push(encodeRequest(it));
            expected.push({ request: { ...it }, payload: null });
          }
        });
        pushSplit(parser, Buffer.concat(bytes), cuts);
        const requests = messages.filter((m) => m.kind === 'request');
        assert.equal(requests.length, expected.length);
        requests.forEach((m, i) => {
          assert.ok(m.kind === 'request');
          assert.deepEqual(m.request, expected[i]!.request);
          if (expected[i]!.payload) assert.deepEqual(Buffer.concat(m.payload!), expected[i]!.payload);
        });
      },
    ),
    { numRuns: 300 },
  );
});

test('property: options survive any split and the first requests may share a chunk with NBD_OPT_GO', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ option: fc.integer({ min: 0, max: 0xffffffff }).filter((o) => o !== P.NBD_OPT_GO), data: fc.uint8Array({ maxLength: 200 }) }), {
        maxLength: 10,
      }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (options, cuts) => {
        const { parser, messages } = collect();
        const req: NbdRequest = { flags: 0, type: P.NBD_CMD_READ, handleHi: 1, handleLo: 2, offset: 512, length: 512 };
        const stream = Buffer.concat([
          encodeClientFlags(1),
          ...options.map((o) => encodeOption(o.option, o.data)),
          encodeOption(P.NBD_OPT_GO, encodeGoOptionData('x', [])),
          encodeRequest(req),
        ]);
        pushSplit(parser, stream, cuts);
        assert.deepEqual(messages[0], { kind: 'client-flags', flags: 1 });
        const opts = messages.filter((m) => m.kind === 'option');
        assert.deepEqual(
          opts.map((m) => (m.kind === 'option' ? [m.option, Buffer.from(m.data)] : null)),
          [...options.map((o) => [o.option, Buffer.from(o.data)]), [P.NBD_OPT_GO, encodeGoOptionData('x', [])]],
        );
        assert.deepEqual(messages.at(-1), { kind: 'request', request: req, payload: null });
      },
    ),
    { numRuns: 300 },
  );
});

test('a write longer than the payload limit is reported at once and its data skipped, not stored', () => {
  const { parser, messages } = collect(1024);
  parser.push(encodeClientFlags(0));
  parser.push(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [])));
  // Claims 4 GiB - 1: must not allocate it.
  const huge: NbdRequest = { flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 7, offset: 0, length: 0xffffffff };
  parser.push(encodeRequest(huge));
  const m = messages.at(-1)!;
  assert.ok(m.kind === 'request' && m.payload === null && m.request.length === 0xffffffff);
  // Stream a little of the claimed data: nothing more is reported.
  const before = messages.length;
  for (let i = 0; i < 64; i++) parser.push(Buffer.alloc(65536, 0xee));
  assert.equal(messages.length, before);
  const usedMb = process.memoryUsage().arrayBuffers / 2 ** 20;
  assert.ok(usedMb < 512, `array buffers ${usedMb} MiB`);
});

test('the skipped data of an oversized write ends exactly where the next request starts', () => {
  const { parser, messages } = collect(16);
  parser.push(encodeClientFlags(0));
  parser.push(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [])));
  const big = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: 100 }, Buffer.alloc(100, 1));
  const next: NbdRequest = { flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 };
  parser.push(Buffer.concat([big, encodeRequest(next)]));
  assert.deepEqual(messages.at(-1), { kind: 'request', request: next, payload: null });
});

test('an option with more data than the limit is skipped and reported as too big', () => {
  const { parser, messages } = collect();
  parser.push(encodeClientFlags(0));
  parser.push(encodeOption(P.NBD_OPT_INFO, Buffer.alloc(70000)));
  parser.push(encodeOption(P.NBD_OPT_LIST));
  assert.deepEqual(messages.slice(1), [
    { kind: 'option-too-big', option: P.NBD_OPT_INFO, length: 70000 },
    { kind: 'option', option: P.NBD_OPT_LIST, data: Buffer.alloc(0) },
  ]);
});

test('wrong magic ends parsing with a protocol error, once', () => {
  const { parser, messages } = collect();
  parser.push(encodeClientFlags(0));
  parser.push(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  parser.push(encodeOption(P.NBD_OPT_LIST));
  assert.equal(messages.filter((m) => m.kind === 'protocol-error').length, 1);
  assert.equal(messages.at(-1)!.kind, 'protocol-error');
  assert.ok(parser.dead);
});

test('property: arbitrary bytes never throw and never yield an option or payload above the limits', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 20 }), (transmission, chunks) => {
      const messages: ClientMessage[] = [];
      const parser = new ClientStreamParser({ maxOptionData: 64, maxPayload: 128 }, recorder((m) => messages.push(m)));
      if (transmission) parser.startTransmission();
      for (const c of chunks) parser.push(Buffer.from(c));
      for (const m of messages) {
        if (m.kind === 'option') assert.ok(m.data.length <= 64);
        if (m.kind === 'request' && m.payload) assert.ok(Buffer.concat(m.payload).length <= 128);
      }
      assert.ok(messages.filter((m) => m.kind === 'protocol-error').length <= 1);
    }),
    { numRuns: 500 },
  );
});


test('property: pausing after any message and resuming later gives the same messages as never pausing', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(arbRequest, fc.record({ offset: fc.nat(), payload: fc.uint8Array({ minLength: 1, maxLength: 300 }) })), { maxLength: 15 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
      (items, cuts, pauses) => {
        const bytes = Buffer.concat([
          encodeClientFlags(3),
          encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [])),
          ...items.map((it, i) =>
            'payload' in it
              ? encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: i, offset: it.offset, length: it.payload.length }, it.payload)
              : encodeRequest(it),
          ),
        ]);
        const plain = collect();
        pushSplit(plain.parser, bytes, cuts);
        // Paused after some messages; resumed only between pushes (as the session does, a turn later).
        const seen: ClientMessage[] = [];
        let n = 0;
        const parser: ClientStreamParser = new ClientStreamParser(
          { maxOptionData: 65536, maxPayload: 1 << 20 },
          recorder((m) => {
            seen.push(m);
            if (m.kind === 'option' && m.option === P.NBD_OPT_GO) parser.startTransmission();
            if (pauses[n++ % pauses.length]) parser.pause();
          }),
        );
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        let prev = 0;
        for (const p of [...points, bytes.length]) {
          if (p > prev) parser.push(bytes.subarray(prev, p));
          prev = p;
          parser.resume();
        }
        while (parser.paused) parser.resume();
        const norm = (ms: ClientMessage[]): unknown[] => ms.map((m) => (m.kind === 'request' && m.payload ? { ...m, payload: Buffer.concat(m.payload) } : m));
        assert.deepEqual(norm(seen), norm(plain.messages));
        assert.equal(parser.pendingBytes, 0);
      },
    ),
    { numRuns: 300 },
  );
});

test('paused at a write header, its data stays unread until resume', () => {
  const { parser, messages } = collect();
  parser.push(encodeClientFlags(0));
  parser.push(encodeOption(P.NBD_OPT_GO, encodeGoOptionData('', [])));
  const write = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: 1000 }, Buffer.alloc(1000, 3));
  const flush = encodeRequest({ flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 });
  const handler = recorder((m) => {
    messages.push(m);
    if (m.kind === 'payload-start') parser2.pause();
  });
  const parser2: ClientStreamParser = new ClientStreamParser({ maxOptionData: 65536, maxPayload: 1 << 20 }, handler);
  parser2.startTransmission();
  parser2.push(Buffer.concat([write, flush]));
  assert.deepEqual(messages.at(-1), { kind: 'payload-start', length: 1000 });
  assert.equal(parser2.pendingBytes, 1000 + 28);
  parser2.resume();
  const last2 = messages.slice(-2);
  assert.equal(last2[0]!.kind, 'request');
  assert.deepEqual(last2[1], { kind: 'request', request: { flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 }, payload: null });
  assert.equal(parser2.pendingBytes, 0);
  void parser;
});

test('stopped from inside a handler (NBD_CMD_DISC), nothing after it is reported or kept', () => {
  const messages: ClientMessage[] = [];
  const parser: ClientStreamParser = new ClientStreamParser(
    { maxOptionData: 65536, maxPayload: 1 << 20 },
    recorder((m) => {
      messages.push(m);
      if (m.kind === 'request' && m.request.type === P.NBD_CMD_DISC) parser.stop();
    }),
  );
  parser.startTransmission();
  const disc = encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 1, offset: 0, length: 0 });
  const write = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 2, offset: 0, length: 4 }, Buffer.from('late'));
  parser.push(Buffer.concat([disc, write]));
  parser.push(write);
  assert.equal(messages.length, 1);
  assert.equal(parser.pendingBytes, 0);
  assert.ok(parser.dead);
});

// Direct reads: the transport may read the rest of a write's data straight
// into the payload buffer (directTarget / filledDirect) instead of pushing
// chunks that are then copied.
test('property: a write whose data partly arrives by direct reads gives the same request, in order with the next', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 300_000 }), fc.integer({ min: 0, max: 300_000 }), fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 70_000 }), (length, pushedRaw, reads, minimum) => {
      const data = Buffer.alloc(length);
      for (let i = 0; i < length; i++) data[i] = (i * 31 + 7) & 0xff;
      const write = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 4096, length }, data);
      const flush = encodeRequest({ flags: 0, type: P.NBD_CMD_FLUSH, handleHi: 0, handleLo: 2, offset: 0, length: 0 });
      const stream = Buffer.concat([write, flush]);
      const got: ClientMessage[] = [];
      const parser = new ClientStreamParser({ maxOptionData: 1024, maxPayload: 1 << 20 }, recorder((m) => got.push(m)));
      parser.startTransmission();
      // The header and some of the data as a chunk, then direct reads while offered, then chunks.
      let off = Math.min(stream.length, P.NBD_REQUEST_SIZE + Math.min(pushedRaw, length));
      parser.push(Buffer.from(stream.subarray(0, off)));
      let r = 0;
      for (;;) {
        const target = parser.directTarget(minimum);
        if (!target) break;
        assert.ok(target.length >= minimum, 'never offers less than asked');
        assert.ok(target.length <= length, 'never more than the data still to come');
        const n = Math.min(target.length, reads[r++ % reads.length]!);
        stream.copy(target, 0, off, off + n);
        off += n;
        parser.filledDirect(n);
      }
      while (off < stream.length) {
        const n = Math.min(stream.length - off, reads[r++ % reads.length]!);
        parser.push(Buffer.from(stream.subarray(off, off + n)));
        off += n;
      }
      const requests = got.filter((m) => m.kind === 'request');
      assert.equal(requests.length, 2);
      const first = requests[0]!;
      assert.ok(first.kind === 'request' && first.request.type === P.NBD_CMD_WRITE && first.request.length === length);
      assert.ok(first.kind === 'request' && Buffer.concat(first.payload!).equals(data), 'the data, whole and in place');
      assert.ok(requests[1]!.kind === 'request' && requests[1]!.request.type === P.NBD_CMD_FLUSH);
    }),
    { numRuns: 150 },
  );
});

test('no direct target while paused, with bytes waiting, or outside a write; a direct read completing while paused is delivered at resume', () => {
  const got: ClientMessage[] = [];
  const parser = new ClientStreamParser({ maxOptionData: 1024, maxPayload: 1 << 20 }, recorder((m) => got.push(m)));
  parser.startTransmission();
  assert.equal(parser.directTarget(1), undefined, 'waiting for a header');
  const data = Buffer.alloc(200_000, 9);
  const write = encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 1, offset: 0, length: data.length }, data);
  parser.push(write.subarray(0, P.NBD_REQUEST_SIZE + 1000));
  assert.equal(parser.directTarget(200_000), undefined, 'less than the minimum is still to come');
  const target = parser.directTarget(65_536)!;
  assert.equal(target.length, 199_000);
  parser.pause();
  assert.equal(parser.directTarget(1), undefined, 'paused');
  write.copy(target, 0, P.NBD_REQUEST_SIZE + 1000);
  parser.filledDirect(target.length);
  assert.equal(got.filter((m) => m.kind === 'request').length, 0, 'nothing delivered while paused');
  parser.resume();
  const req = got.find((m) => m.kind === 'request');
  assert.ok(req && req.kind === 'request' && Buffer.concat(req.payload!).equals(data));
  // Bytes waiting (pushed while paused): no direct target until they are parsed.
  parser.pause();
  parser.push(encodeRequest({ flags: 0, type: P.NBD_CMD_WRITE, handleHi: 0, handleLo: 2, offset: 0, length: 100_000 }).subarray(0, P.NBD_REQUEST_SIZE));
  assert.equal(parser.directTarget(1), undefined);
  parser.resume();
  assert.equal(parser.directTarget(1)!.length, 100_000);
  assert.equal(parser.lastWriteLength, 100_000);
});
