import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import {
  decodeDiscovery,
  encodeDiscovery,
  DISCOVERY_MAX_SIZE,
  type FindServer,
  type ServerHello,
} from '../../src/discovery/datagram';
import { ReplayGuard } from '../../src/discovery/replay-guard';

const key = Buffer.alloc(32, 0x42);
const otherKey = Buffer.alloc(32, 0x43);
const nonce = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const find: FindServer = { type: 'find-server', timestampMs: 1_700_000_000_123, nonce, clientName: 'desk' };
const hello: ServerHello = {
  type: 'server-hello',
  timestampMs: 1_700_000_000_456,
  nonce: Buffer.alloc(16, 7),
  requestNonce: nonce,
  payloadPort: 4644,
  busy: true,
  serverName: 'laptop',
};

test('FIND_SERVER has exactly the documented bytes', () => {
  const d = encodeDiscovery(find, key);
  const body = Buffer.concat([Buffer.from([4]), Buffer.from('desk')]);
  const head = Buffer.concat([
    Buffer.from('STFD'), Buffer.from([1, 1, 0, body.length]),
    Buffer.from('0000018bcfe5687b', 'hex'), nonce,
  ]);
  const signed = Buffer.concat([head, body]);
  assert.deepEqual(d, Buffer.concat([signed, createHmac('sha256', key).update(signed).digest()]));
});

test('SERVER_HELLO has exactly the documented bytes', () => {
  const d = encodeDiscovery(hello, key);
  const body = Buffer.concat([nonce, Buffer.from([0x12, 0x24, 0x01, 6]), Buffer.from('laptop')]);
  assert.deepEqual(d.subarray(0, 8), Buffer.concat([Buffer.from('STFD'), Buffer.from([1, 2, 0, body.length])]));
  assert.deepEqual(d.subarray(32, 32 + body.length), body);
  assert.equal(d.length, 32 + body.length + 32);
});

test('both messages decode to what was encoded', () => {
  assert.deepEqual(decodeDiscovery(encodeDiscovery(find, key), key), { ok: true, message: find });
  assert.deepEqual(decodeDiscovery(encodeDiscovery(hello, key), key), { ok: true, message: hello });
});

test('the secret and the key never appear in a datagram', () => {
  const d = encodeDiscovery(find, key);
  assert.equal(d.indexOf(key), -1);
  assert.equal(d.indexOf(key.subarray(0, 8)), -1);
});

test('every truncation is dropped as truncated, never accepted', () => {
  const d = encodeDiscovery(hello, key);
  for (let n = 4; n < d.length; n++) {
    const r = decodeDiscovery(d.subarray(0, n), key);
    assert.equal(r.ok, false, `length ${n}`);
    if (!r.ok) assert.equal(r.reason, 'truncated', `length ${n}`);
  }
});

test('another key, another protocol, another version are told apart', () => {
  const d = encodeDiscovery(find, key);
  assert.deepEqual(decodeDiscovery(d, otherKey), { ok: false, reason: 'bad-tag' });
  assert.deepEqual(decodeDiscovery(Buffer.from('GET / HTTP/1.1\r\n\r\n'), key), { ok: false, reason: 'foreign' });
  assert.deepEqual(decodeDiscovery(Buffer.alloc(2), key), { ok: false, reason: 'foreign' });
  const v2 = Buffer.from(d);
  v2[4] = 2;
  assert.deepEqual(decodeDiscovery(v2, key), { ok: false, reason: 'version' });
  assert.deepEqual(decodeDiscovery(Buffer.concat([d, Buffer.from([0])]), key), { ok: false, reason: 'malformed' });
});

test('flipping any bit of a datagram makes it rejected', () => {
  const d = encodeDiscovery(hello, key);
  for (let i = 0; i < d.length; i++) {
    for (const bit of [0x01, 0x80]) {
      const t = Buffer.from(d);
      t[i]! ^= bit;
      assert.equal(decodeDiscovery(t, key).ok, false, `byte ${i} bit ${bit}`);
    }
  }
});

test('property: decode never throws and only accepts what the key signed', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: DISCOVERY_MAX_SIZE }), (bytes) => {
      const r = decodeDiscovery(bytes, key);
      return r.ok === false;
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.record({
        ts: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }),
        name: fc.string({ maxLength: 80 }).filter((s) => !/[\x00-\x1f\x7f]/.test(s) && !/[\ud800-\udfff]/.test(s)),
        port: fc.integer({ min: 1, max: 65535 }),
        busy: fc.boolean(),
      }),
      ({ ts, nonce: n, name, port, busy }) => {
        const m: ServerHello = { type: 'server-hello', timestampMs: ts, nonce: Buffer.from(n), requestNonce: Buffer.from(n).reverse(), payloadPort: port, busy, serverName: name };
        const r = decodeDiscovery(encodeDiscovery(m, key), key);
        assert.ok(r.ok);
        const got = r.message as ServerHello;
        assert.equal(got.payloadPort, port);
        assert.equal(got.busy, busy);
        // Long names are cut at 64 bytes on a character boundary.
        assert.ok(name.startsWith(got.serverName));
        assert.ok(Buffer.byteLength(got.serverName) <= 64);
      },
    ),
    { numRuns: 500 },
  );
});

test('replay guard: fresh once, then replay; outside the window stale', () => {
  const g = new ReplayGuard({ maxSkewMs: 1000 });
  const n1 = Buffer.alloc(16, 1);
  assert.equal(g.check(10_000, n1, 10_000), 'fresh');
  assert.equal(g.check(10_000, n1, 10_100), 'replay');
  assert.equal(g.check(8_000, Buffer.alloc(16, 2), 10_000), 'stale');
  assert.equal(g.check(12_000, Buffer.alloc(16, 3), 10_000), 'stale');
  // After the window has passed, the remembered nonce is forgotten, and its timestamp is stale.
  assert.equal(g.check(10_000, n1, 11_500), 'stale');
  assert.equal(g.size, 0);
});

test('replay guard: memory is bounded and forgotten nonces stay refused', () => {
  const g = new ReplayGuard({ maxSkewMs: 60_000, capacity: 100 });
  const nonceOf = (i: number): Buffer => {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(i);
    return b;
  };
  for (let i = 0; i < 1000; i++) assert.equal(g.check(100_000 + i, nonceOf(i), 100_500), 'fresh');
  assert.equal(g.size, 100);
  // Nonce 5 was forgotten; replaying it must still fail.
  assert.equal(g.check(100_005, nonceOf(5), 100_500), 'stale');
  assert.equal(g.check(100_999, nonceOf(999), 100_500), 'replay');
  assert.equal(g.check(101_000, nonceOf(5000), 100_500), 'fresh');
});
