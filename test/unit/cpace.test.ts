import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  calculateGenerator, CpaceError, cpaceRespond, cpaceStart, DSI, DSI_ISK, G_I, generatorString, H_S_IN_BYTES,
  intermediateSessionKey, lvCat, prependLen, sampleScalar, scalarMult, scalarMultVfy, transcriptIr,
} from '../../src/crypto/cpace';
import {
  confirmTag, desktopPairingStart, laptopPairingRespond, newPairingCode, normalizePairingCode, pairedSecret,
  pairingTranscriptHash, verifyConfirmTag,
} from '../../src/crypto/pairing-code';
import { ristretto255 } from '@noble/curves/ed25519.js';
import { deriveSubKeys } from '../../src/crypto/keys';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

// draft-irtf-cfrg-cpace-21, appendix "Test vector for CPace using group
// ristretto255 and hash SHA-512" (and the string utility vectors before it).
const V = {
  PRS: bytes('Password'),
  CI: hex('0b415f696e69746961746f720b425f726573706f6e646572'),
  sid: hex('7e4b4791d6a8ef019b936c79fb7f2c57'),
  generatorString: hex(`
    11435061636552697374726574746f3235350850617373776f726464
    00000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000000000000000000000000000
    00000000000000000000000000000000180b415f696e69746961746f
    720b425f726573706f6e646572107e4b4791d6a8ef019b936c79fb7f
    2c57`),
  g: hex('222b6b195fe84b1652badb6f6a3ae3d24341e7306967f0b8115b40d5698c7e56'),
  ADa: bytes('ADa'),
  ya: hex('da3d23700a9e5699258aef94dc060dfda5ebb61f02a5ea77fad53f4ff0976d08'),
  Ya: hex('d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0eec482b9157'),
  ADb: bytes('ADb'),
  yb: hex('d2316b454718c35362d83d69df6320f38578ed5984651435e2949762d900b80d'),
  Yb: hex('3ea7e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f7258'),
  K: hex('80b69a8a76457ab6a4d7f887a4bf6b55a2f80ac19c333f917a05fc9887c8b40f'),
  transcriptIr: hex(`
    20d6bac480f2c386c394efc7c47adb9925dcd2630b64f240c50f8d0e
    ec482b915703414461203ea7e0b19560d7c0b0f5734f63b955286dfa
    8232b5ebe63324e2d9e7433f725803414462`),
  DSI_ISK: hex('435061636552697374726574746f3235355f49534b'),
  iskInput: hex(`
    15435061636552697374726574746f3235355f49534b107e4b4791d6
    a8ef019b936c79fb7f2c572080b69a8a76457ab6a4d7f887a4bf6b55
    a2f80ac19c333f917a05fc9887c8b40f20d6bac480f2c386c394efc7
    c47adb9925dcd2630b64f240c50f8d0eec482b915703414461203ea7
    e0b19560d7c0b0f5734f63b955286dfa8232b5ebe63324e2d9e7433f
    725803414462`),
  ISK_IR: hex(`
    b69effbf61b51d56401c0f65601abe428de8206feaaf0e32198896dc
    ae7b35cd2b38950a39dfd5d4a79164614c2984f7daa460b588c1e80c
    3fa2068af7900447`),
  // "Test case for scalar_mult with valid inputs" and "Invalid inputs for scalar_mult_vfy".
  s: hex('7cd0e075fa7955ba52c02759a6c90dbbfc10e6d40aea8d283e407d88cf538a05'),
  X: hex('2c3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c'),
  sX: hex('7c13645fe790a468f62c39beb7388e541d8405d1ade69d1778c5fe3e7f6b600e'),
  Y_i1: hex('2b3c6b8c4f3800e7aef6864025b4ed79bd599117e427c41bd47d93d654b4a51c'),
  Y_i2: hex('0000000000000000000000000000000000000000000000000000000000000000'),
};

test('prepend_len, lv_cat and transcript_ir match the draft\'s string vectors', () => {
  assert.equal(toHex(prependLen(new Uint8Array(0))), '00');
  assert.equal(toHex(prependLen(bytes('1234'))), '0431323334');
  const range = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => i);
  assert.equal(toHex(prependLen(range(127))), `7f${toHex(range(127))}`);
  assert.equal(toHex(prependLen(range(128))), `8001${toHex(range(128))}`);
  assert.equal(toHex(lvCat(bytes('1234'), bytes('5'), bytes(''), bytes('678'))), '043132333401350003363738');
  assert.equal(toHex(transcriptIr(bytes('123'), bytes('PartyA'), bytes('234'), bytes('PartyB'))),
    '03313233065061727479410332333406506172747942');
  assert.equal(toHex(transcriptIr(bytes('3456'), bytes('PartyA'), bytes('2345'), bytes('PartyB'))),
    '043334353606506172747941043233343506506172747942');
});

test('the generator string (100 bytes of zero padding) and the generator g match the draft', () => {
  assert.equal(toHex(DSI_ISK), toHex(V.DSI_ISK));
  const genStr = generatorString(DSI, V.PRS, V.CI, V.sid, H_S_IN_BYTES);
  assert.equal(genStr.length, 170);
  assert.equal(toHex(genStr), toHex(V.generatorString));
  assert.equal(toHex(calculateGenerator(V.PRS, V.CI, V.sid).toBytes()), toHex(V.g));
});

test('Ya, Yb, K and the initiator-responder ISK match the draft', () => {
  const g = calculateGenerator(V.PRS, V.CI, V.sid);
  assert.equal(toHex(scalarMult(V.ya, g)), toHex(V.Ya));
  assert.equal(toHex(scalarMult(V.yb, g)), toHex(V.Yb));
  assert.equal(toHex(scalarMultVfy(V.ya, V.Yb)), toHex(V.K));
  assert.equal(toHex(scalarMultVfy(V.yb, V.Ya)), toHex(V.K));
  const transcript = transcriptIr(V.Ya, V.ADa, V.Yb, V.ADb);
  assert.equal(toHex(transcript), toHex(V.transcriptIr));
  assert.equal(toHex(lvCat(DSI_ISK, V.sid, V.K)), toHex(V.iskInput.subarray(0, V.iskInput.length - transcript.length)));
  assert.equal(toHex(intermediateSessionKey(V.sid, V.K, transcript)), toHex(V.ISK_IR));
});

test('cpaceStart and cpaceRespond with the draft\'s scalars give its messages and ISK', () => {
  const common = { prs: V.PRS, ci: V.CI, sid: V.sid };
  const a = cpaceStart({ ...common, ad: V.ADa, scalar: V.ya });
  assert.equal(toHex(a.message), toHex(V.Ya));
  const b = cpaceRespond({ ...common, ad: V.ADb, scalar: V.yb, peerMessage: a.message, peerAd: V.ADa });
  assert.equal(toHex(b.message), toHex(V.Yb));
  assert.equal(toHex(b.isk), toHex(V.ISK_IR));
  assert.equal(toHex(a.finish(b.message, V.ADb)), toHex(V.ISK_IR));
  assert.throws(() => a.finish(b.message, V.ADb), CpaceError, 'a scalar is used once');
});

test('scalar_mult_vfy: the draft\'s valid case, and its invalid inputs abort', () => {
  assert.equal(toHex(scalarMult(V.s, ristretto255.Point.fromBytes(V.X))), toHex(V.sX));
  assert.equal(toHex(scalarMultVfy(V.s, V.X)), toHex(V.sX));
  assert.deepEqual(V.Y_i2, G_I);
  assert.throws(() => scalarMultVfy(V.s, V.Y_i1), { code: 'E_CPACE', message: /not a valid ristretto255 encoding/ });
  assert.throws(() => scalarMultVfy(V.s, V.Y_i2), { code: 'E_CPACE', message: /identity element/ });
  // "include weak or invalid point encodings within the messages of party A
  // and B and introduce this in a protocol run" (Implementation verification).
  for (const bad of [V.Y_i1, V.Y_i2]) {
    assert.throws(() => cpaceRespond({ prs: V.PRS, ci: V.CI, sid: V.sid, peerMessage: bad }), CpaceError);
    assert.throws(() => cpaceStart({ prs: V.PRS, ci: V.CI, sid: V.sid }).finish(bad), CpaceError);
  }
});

test('sample_scalar keeps 252 bits and differs each time', () => {
  const scalars = Array.from({ length: 64 }, sampleScalar);
  for (const y of scalars) {
    assert.equal(y.length, 32);
    assert.equal(y[31]! & 0xf0, 0);
  }
  assert.equal(new Set(scalars.map(toHex)).size, scalars.length);
});

/** One whole pairing; `typedCode` is what the user typed at the desktop. */
function pair(shownCode: string, typedCode: string) {
  const desktop = desktopPairingStart({ code: typedCode });
  const laptop = laptopPairingRespond({ code: shownCode, sid: desktop.sid, desktopMessage: desktop.message });
  const desktopIsk = desktop.finish(laptop.message);
  const th = pairingTranscriptHash(desktop.sid, desktop.message, laptop.message);
  const laptopTag = confirmTag(laptop.isk, 'laptop', th);
  const desktopTag = confirmTag(desktopIsk, 'desktop', th);
  return {
    desktopAcceptsLaptop: verifyConfirmTag(desktopIsk, 'laptop', th, laptopTag),
    laptopAcceptsDesktop: verifyConfirmTag(laptop.isk, 'desktop', th, desktopTag),
    desktopSecret: pairedSecret(desktopIsk),
    laptopSecret: pairedSecret(laptop.isk),
    desktopTag,
    laptopTag,
    laptopIsk: laptop.isk,
    th,
  };
}

test('the same code on both sides: tags check, and both get the same 32-byte secret', () => {
  const code = newPairingCode();
  const run = pair(code, code.replace(' ', '-'));
  assert.ok(run.desktopAcceptsLaptop);
  assert.ok(run.laptopAcceptsDesktop);
  assert.equal(run.desktopSecret.length, 32);
  assert.deepEqual(run.desktopSecret, run.laptopSecret);
  assert.deepEqual(deriveSubKeys(run.desktopSecret), deriveSubKeys(run.laptopSecret));
  // A tag is only good for its role: a reflected one fails.
  assert.ok(!verifyConfirmTag(run.laptopIsk, 'desktop', run.th, run.laptopTag));
  assert.ok(!verifyConfirmTag(run.laptopIsk, 'laptop', run.th, run.laptopTag.subarray(0, 31)));
  // Two runs with the same code share nothing.
  assert.notDeepEqual(pair(code, code).laptopSecret, run.laptopSecret);
});

test('different codes: the secrets differ and neither tag checks', () => {
  const run = pair('123 456', '123 457');
  assert.ok(!run.desktopAcceptsLaptop);
  assert.ok(!run.laptopAcceptsDesktop);
  assert.notDeepEqual(run.desktopSecret, run.laptopSecret);
});

test('a tampered message is refused: identity, invalid encoding, wrong length', () => {
  const code = '000 042';
  const desktop = desktopPairingStart({ code });
  const bad = [G_I, V.Y_i1, new Uint8Array(0), desktop.message.subarray(0, 31), new Uint8Array([...desktop.message, 0])];
  for (const message of bad) {
    assert.throws(() => laptopPairingRespond({ code, sid: desktop.sid, desktopMessage: message }), CpaceError);
    assert.throws(() => desktopPairingStart({ code }).finish(message), CpaceError);
  }
  assert.throws(() => laptopPairingRespond({ code, sid: desktop.sid.subarray(1), desktopMessage: desktop.message }), RangeError);
});

test('random 32 bytes for the desktop\'s message: refused, or no agreement', () => {
  const code = '314 159';
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (junk) => {
      const desktop = desktopPairingStart({ code });
      let laptop;
      try {
        laptop = laptopPairingRespond({ code, sid: desktop.sid, desktopMessage: junk });
      } catch (err) {
        assert.ok(err instanceof CpaceError);
        return;
      }
      const desktopIsk = desktop.finish(laptop.message);
      const th = pairingTranscriptHash(desktop.sid, desktop.message, laptop.message);
      assert.ok(!verifyConfirmTag(desktopIsk, 'laptop', th, confirmTag(laptop.isk, 'laptop', th)));
    }),
    { numRuns: 50 },
  );
});

test('a new pairing code is shown as "ddd ddd"', () => {
  for (let i = 0; i < 100; i++) {
    const code = newPairingCode();
    assert.match(code, /^[0-9]{3} [0-9]{3}$/);
    assert.equal(normalizePairingCode(code), code.replace(' ', ''));
  }
});

test('normalizePairingCode accepts exactly six ASCII digits among spaces and dashes', () => {
  const separators = fc.array(fc.constantFrom(' ', '-'), { maxLength: 3 }).map((s) => s.join(''));
  const digit = fc.constantFrom(...'0123456789');
  // Six digits with separators anywhere: accepted, as the digits.
  fc.assert(
    fc.property(fc.array(digit, { minLength: 6, maxLength: 6 }), fc.array(separators, { minLength: 7, maxLength: 7 }), (digits, seps) => {
      const typed = seps.map((s, i) => s + (digits[i] ?? '')).join('');
      assert.equal(normalizePairingCode(typed), digits.join(''));
    }),
  );
  // Anything else: refused. Strings over digits, separators and look-alikes,
  // kept only when they are not six digits among separators.
  const char = fc.constantFrom(...'0123456789 -', '\t', '_', '.', 'a', 'O', '\u0661', '\uff11', '\u00a0', '+');
  fc.assert(
    fc.property(fc.array(char, { maxLength: 12 }).map((c) => c.join('')), (typed) => {
      const isCode = /^[ -]*([0-9][ -]*){6}$/.test(typed);
      assert.equal(normalizePairingCode(typed) !== undefined, isCode, JSON.stringify(typed));
    }),
    { numRuns: 2000 },
  );
  for (const typed of ['12345', '1234567', '12 34 5', '123 45a', '', '١٢٣٤٥٦', '123\u00a0456', '123_456']) {
    assert.equal(normalizePairingCode(typed), undefined, typed);
  }
});
