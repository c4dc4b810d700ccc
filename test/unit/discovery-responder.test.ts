// The discovery responder's handling of one datagram, apart from its sockets:
// what it answers, and what a flood of forged datagrams from many senders
// does to its console and its memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { decodeDiscovery, encodeDiscovery } from '../../src/discovery/datagram';
import { createFindServerHandler } from '../../src/discovery/responder';
import { createStreamLogger } from '../../src/log';
import { WarningLimiter } from '../../src/warning-limiter';

const key = randomBytes(32);
const other = randomBytes(32);

function handler(now: () => number) {
  const lines: string[] = [];
  const h = createFindServerHandler({ key, port: 61570, payloadPort: 4644, serverName: 'lap', maxClockSkewMs: 600_000, now }, createStreamLogger({ write: (l) => lines.push(l) }));
  return { h, lines };
}

test('an authentic fresh request is answered once; a replay and a stale one are not', () => {
  let t = 1_700_000_000_000;
  const { h } = handler(() => t);
  const find = encodeDiscovery({ type: 'find-server', timestampMs: t, nonce: randomBytes(16), clientName: 'desk' }, key);
  const reply = h.handle(find, { address: 'fe80::1', port: 40000 });
  assert.ok(reply);
  const hello = decodeDiscovery(reply, key);
  assert.ok(hello.ok && hello.message.type === 'server-hello');
  assert.equal(h.handle(find, { address: 'fe80::1', port: 40000 }), undefined);
  t += 601_000;
  const stale = encodeDiscovery({ type: 'find-server', timestampMs: t - 601_000, nonce: randomBytes(16), clientName: 'desk' }, key);
  assert.equal(h.handle(stale, { address: 'fe80::1', port: 40000 }), undefined);
  assert.deepEqual([h.counters.answered, h.counters.replay, h.counters.stale], [1, 1, 1]);
});

test('200,000 forged datagrams from 200,000 senders: a few warning lines, bounded memory, every one counted', () => {
  let t = 1_700_000_000_000;
  const { h, lines } = handler(() => t);
  const forged = encodeDiscovery({ type: 'find-server', timestampMs: t, nonce: randomBytes(16), clientName: 'x' }, other);
  const n = 200_000;
  for (let i = 0; i < n; i++) {
    // 10.a.b.c, a new sender every datagram; 20 s of flood in all.
    t += 0.1;
    assert.equal(h.handle(forged, { address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, port: 5000 }), undefined);
  }
  assert.equal(h.counters['bad-tag'], n);
  const warnings = lines.filter((l) => l.includes('bad-tag'));
  // 10 lines per 10 s window, over 20 s: 20 (plus the first of a third window), and the held-back counts.
  assert.ok(warnings.length <= 30, `${warnings.length} warning lines`);
  assert.ok(lines.some((l) => /\d+ more such warnings were held back/.test(l)), lines.slice(0, 15).join(''));
  assert.ok(h.warnings.size <= 1000, `${h.warnings.size} senders remembered`);
});

test('the limiter: per key, per window, and the count of what was held back', () => {
  let t = 0;
  const w = new WarningLimiter({ perKeyMs: 10_000, windowMs: 10_000, perWindow: 2, maxKeys: 3, now: () => t });
  assert.deepEqual(w.lines('a', 'A'), ['A']);
  assert.deepEqual(w.lines('a', 'A'), [], 'the same key within 10 s');
  assert.deepEqual(w.lines('b', 'B'), ['B']);
  assert.deepEqual(w.lines('c', 'C'), [], 'the window is full');
  assert.deepEqual(w.lines('d', 'D'), []);
  t = 10_000;
  assert.deepEqual(w.lines('c', 'C'), ['2 more such warnings were held back (at most 2 every 10 s)', 'C']);
  assert.deepEqual(w.lines('a', 'A'), ['A'], 'a key comes back after 10 s');
  assert.equal(w.takeHeld(), 0);
  for (const k of ['e', 'f', 'g', 'h']) {
    t += 10_000;
    w.lines(k, k);
  }
  assert.equal(w.size, 3, 'at most maxKeys remembered');
});
