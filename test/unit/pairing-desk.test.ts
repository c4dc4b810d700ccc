// The laptop's pairing state against the desktop's side of the PAKE: the
// right code pairs (once), wrong codes count down to a new code, replays and
// other hosts are not guesses, and the keys go to the paired host only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { deriveKey } from '../../src/crypto/keys';
import { confirmTag, desktopPairingStart, pairedSecret, pairingTranscriptHash, verifyConfirmTag } from '../../src/crypto/pairing-code';
import { PairingDesk, PairingRefused, type CodeReason } from '../../src/laptop/pairing-desk';
import { codeLine } from '../../src/laptop/pxe';
import { ipxeScript, linkLocalOf } from '../../src/laptop/pxe-http';
import {
  decodeConfirmRequest,
  decodeStartRequest,
  decodeStartResponse,
  encodeStartRequest,
  encodeStartResponse,
  PairingFormatError,
  PAIRING_VERSION,
} from '../../src/payload/pairing';

const DESKTOP = 'fe80::5054:ff:fe12:3402';

function desk(codes: string[], now = () => 1_000) {
  const shown: Array<{ code: string; reason: CodeReason }> = [];
  const d = new PairingDesk({ validMs: 300_000, makeCode: () => codes.shift()!, show: (code, reason) => shown.push({ code, reason }), now });
  d.open();
  return { d, shown };
}

/** One run of the desktop's side with `typed`: the start, then the confirmation it would send. */
function attempt(d: PairingDesk, typed: string, host = DESKTOP) {
  const mine = desktopPairingStart({ code: typed });
  const sid = Buffer.from(mine.sid);
  const ya = Buffer.from(mine.message);
  const started = d.start({ version: PAIRING_VERSION, sid, message: ya, name: 'desk' }, host);
  const isk = mine.finish(started.message);
  const transcript = pairingTranscriptHash(sid, ya, started.message, Buffer.from(started.attempt));
  return { started, isk, transcript, confirm: { attempt: started.attempt, tag: confirmTag(isk, 'desktop', transcript) } };
}

test('the right code pairs: both sides prove it, the keys match, and the code is used up', () => {
  const { d, shown } = desk(['111 111', '222 222']);
  assert.deepEqual(shown, [{ code: '111 111', reason: 'first' }]);
  const a = attempt(d, '111-111');
  const done = d.confirm(a.confirm, DESKTOP);
  assert.ok(verifyConfirmTag(a.isk, 'laptop', a.transcript, done.tag), "the laptop's tag proves it knew the code");
  assert.match(done.identity, /^stiefelsystem-pair-v1:[0-9a-f]{32}$/);
  const secret = pairedSecret(a.isk);
  assert.deepEqual(d.keysFor(done.identity, DESKTOP), { psk: deriveKey(secret, 'payloadPsk'), manifestKey: deriveKey(secret, 'manifest') });
  // The keys are this host's alone, and only under its identity.
  assert.equal(d.keysFor(done.identity, 'fe80::6666'), undefined);
  assert.equal(d.keysFor('stiefelsystem-pair-v1:' + '0'.repeat(32), DESKTOP), undefined);
  // Single use: a new code is shown at once, and the same confirmation again is not accepted.
  assert.deepEqual(shown.at(-1), { code: '222 222', reason: 'used' });
  assert.throws(() => d.confirm(a.confirm, DESKTOP), (e: unknown) => e instanceof PairingRefused && e.code === 'E_PAIR_ATTEMPT');
});

test('wrong codes count down; the third shows a new code and pauses pairing (10 s, doubling), the old code is worth nothing after', () => {
  let t = 1_000;
  const { d, shown } = desk(['123 456', '654 321', '111 111', '222 222'], () => t);
  const refused = (typed: string) => {
    try {
      d.confirm(attempt(d, typed).confirm, DESKTOP);
    } catch (e) {
      assert.ok(e instanceof PairingRefused);
      return `${e.status} ${e.code} ${e.message}`;
    }
    assert.fail(`${typed} paired`);
  };
  const paused = (): string => {
    try {
      attempt(d, '000000');
    } catch (e) {
      assert.ok(e instanceof PairingRefused);
      return `${e.status} ${e.code} ${e.message}`;
    }
    assert.fail('not paused');
  };
  assert.equal(refused('000000'), '403 E_PAIR_CODE wrong pairing code: 2 tries left');
  assert.equal(refused('123457'), '403 E_PAIR_CODE wrong pairing code: 1 try left');
  // An attempt started with the right code before the third wrong one ends with it.
  const early = attempt(d, '123456');
  assert.equal(refused('999999'), '403 E_PAIR_CODE wrong pairing code 3 times: the laptop shows a new one; it pairs again in 10 s');
  assert.deepEqual(shown.at(-1), { code: '654 321', reason: 'wrong' });
  assert.equal(paused(), '429 E_PAIR_PAUSED too many wrong pairing codes: the laptop pairs again in 10 s (with the code then on its console)');
  t += 10_000;
  assert.throws(() => d.confirm(early.confirm, DESKTOP), (e: unknown) => e instanceof PairingRefused && e.code === 'E_PAIR_ATTEMPT');
  assert.match(refused('123456'), /^403 E_PAIR_CODE wrong pairing code: 2 tries left/);
  // A second code lost in a row: 20 s.
  refused('000001');
  assert.match(refused('000002'), /the laptop shows a new one; it pairs again in 20 s$/);
  t += 19_000;
  assert.match(paused(), /pairs again in 1 s/);
  t += 1_000;
  // The right code pairs, and the next lost code pauses 10 s again.
  assert.ok(d.confirm(attempt(d, '111111').confirm, DESKTOP).identity);
  refused('000000');
  refused('000000');
  assert.match(refused('000000'), /it pairs again in 10 s$/);
});

test('replays and other hosts are not guesses: the count stays, the code stays', () => {
  const { d, shown } = desk(['111 222', '333 444']);
  const a = attempt(d, '000000');
  assert.throws(() => d.confirm(a.confirm, 'fe80::bad'), (e: unknown) => e instanceof PairingRefused && e.code === 'E_PAIR_ATTEMPT');
  assert.throws(() => d.confirm(a.confirm, DESKTOP), (e: unknown) => e instanceof PairingRefused && /2 tries left/.test(e.message));
  // The same wrong confirmation replayed: unknown now, not a second wrong try.
  for (let i = 0; i < 5; i++) assert.throws(() => d.confirm(a.confirm, DESKTOP), (e: unknown) => e instanceof PairingRefused && e.code === 'E_PAIR_ATTEMPT');
  // A replayed start gets a fresh share from the laptop: without the desktop's scalar it confirms nothing.
  const replayed = d.start(decodeStartRequest(encodeStartRequest({ version: PAIRING_VERSION, sid: Buffer.alloc(16, 1), message: Buffer.from(desktopPairingStart({ code: '111222' }).message), name: 'x' })), DESKTOP);
  assert.throws(() => d.confirm({ attempt: replayed.attempt, tag: Buffer.alloc(32) }, DESKTOP), (e: unknown) => e instanceof PairingRefused && /1 try left/.test(e.message));
  assert.equal(shown.length, 1);
  assert.ok(d.confirm(attempt(d, '111 222').confirm, DESKTOP));
});

test('a code expires: the next start runs with a new one', () => {
  let t = 0;
  const { d, shown } = desk(['111 111', '222 222'], () => t);
  t = 300_001;
  const a = attempt(d, '111111');
  assert.deepEqual(shown.at(-1), { code: '222 222', reason: 'expired' });
  assert.throws(() => d.confirm(a.confirm, DESKTOP), (e: unknown) => e instanceof PairingRefused && e.code === 'E_PAIR_CODE');
  d.close();
});

test('a share that is not a ristretto255 point is refused before anything is computed', () => {
  const { d } = desk(['111 111']);
  for (const message of [Buffer.alloc(32), Buffer.alloc(32, 0xff)]) {
    assert.throws(
      () => d.start({ version: PAIRING_VERSION, sid: Buffer.alloc(16, 7), message, name: 'x' }, DESKTOP),
      (e: unknown) => e instanceof PairingRefused && e.status === 400 && e.code === 'E_PAIR_MESSAGE',
    );
  }
});

test('pairing messages: what the wire carries, and what is refused', () => {
  const sid = Buffer.alloc(16, 0xab);
  const msg = Buffer.alloc(32, 0xcd);
  const back = decodeStartRequest(encodeStartRequest({ version: PAIRING_VERSION, sid, message: msg, name: 'my-desktop' }));
  assert.deepEqual(back, { version: 1, sid, message: msg, name: 'my-desktop' });
  assert.deepEqual(decodeStartResponse(encodeStartResponse({ attempt: 'ab'.repeat(16), message: msg, serverName: 'lap', payloadPort: 4644 })), {
    attempt: 'ab'.repeat(16),
    message: msg,
    serverName: 'lap',
    payloadPort: 4644,
  });
  const bad = [
    '',
    '[]',
    'null',
    '{"version":2,"sid":"00","message":"00","name":"x"}',
    `{"version":1,"sid":"${'0'.repeat(31)}","message":"${'0'.repeat(64)}","name":"x"}`,
    `{"version":1,"sid":"${'A'.repeat(32)}","message":"${'0'.repeat(64)}","name":"x"}`,
    `{"version":1,"sid":"${'0'.repeat(32)}","message":"${'0'.repeat(64)}","name":"a b"}`,
  ];
  for (const text of bad) assert.throws(() => decodeStartRequest(text), PairingFormatError, text);
  assert.throws(() => decodeConfirmRequest(`{"attempt":"${'0'.repeat(32)}","tag":"${'0'.repeat(62)}"}`), PairingFormatError);
});

test("the iPXE script loads stiefelOS from the link's address and names where to pair", () => {
  assert.equal(
    ipxeScript({ base: 'http://10.185.0.1:4680', pair: '[fe80::1]:4680', serverName: 'lap', cmdline: 'console=ttyS0,115200 console=tty0' }),
    [
      '#!ipxe',
      "echo stiefelsystem: loading stiefelOS from the laptop 'lap'",
      'kernel http://10.185.0.1:4680/pxe/vmlinuz initrd=initrd.img stiefel.role=client stiefel.pair=[fe80::1]:4680 console=ttyS0,115200 console=tty0',
      'initrd --name initrd.img http://10.185.0.1:4680/pxe/initrd.img',
      'boot',
      '',
    ].join('\n'),
  );
  const ifs = {
    lo: [{ address: '127.0.0.1', family: 'IPv4' }],
    eth0: [
      { address: '10.185.0.1', family: 'IPv4' },
      { address: 'fe80::5054:ff:fe12:3401', family: 'IPv6', scopeid: 2 },
    ],
  } as unknown as Parameters<typeof linkLocalOf>[1];
  assert.equal(linkLocalOf('::ffff:10.185.0.1', ifs), 'fe80::5054:ff:fe12:3401');
  assert.equal(linkLocalOf('fe80::9%eth0', ifs), 'fe80::9');
  assert.equal(linkLocalOf('127.0.0.1', ifs), undefined);
  assert.match(codeLine('123 456', 'wrong', 300_000), /^pairing code for a desktop that PXE-boots: 123 456 \(the last one was typed wrong 3 times\); valid 5 min, 3 tries$/);
});

test('property: the pairing decoders take any text and either give a well-formed message or throw PairingFormatError', () => {
  const decoders = [decodeStartRequest, decodeStartResponse, decodeConfirmRequest];
  const field = fc.oneof(fc.string(), fc.stringMatching(/^[0-9a-f]{0,70}$/), fc.integer(), fc.constant(null), fc.boolean());
  const text = fc.oneof(
    fc.string(),
    fc.record({ version: fc.oneof(fc.constant(1), field), sid: field, message: field, name: field, attempt: field, tag: field, serverName: field, payloadPort: field }).map((o) => JSON.stringify(o)),
  );
  fc.assert(
    fc.property(text, (t) => {
      for (const decode of decoders) {
        try {
          const m = decode(t) as unknown as Record<string, unknown>;
          for (const v of Object.values(m)) if (Buffer.isBuffer(v)) assert.ok(v.length === 16 || v.length === 32);
        } catch (e) {
          if (!(e instanceof PairingFormatError)) throw e;
        }
      }
    }),
    { numRuns: 2000 },
  );
});
