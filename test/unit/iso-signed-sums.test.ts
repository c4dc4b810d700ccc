// Checksum lists as distributions publish them, and gpgv's status lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StiefelError } from '../../src/errors';
import { isClearSigned, parseSha256Sums, sumFor, validSignature } from '../../src/iso/signed-sums';

const A = 'a'.repeat(64);
const B = 'B'.repeat(64);

test("SHA256SUMS: coreutils' text and binary lines, BSD lines, ./ and directories; other lines skipped", () => {
  const sums = parseSha256Sums(`${A}  debian-12.8.0-amd64-netinst.iso\r\n${B} *ubuntu-24.04-live-server-amd64.iso\n# a comment\nSHA256 (Fedora-Everything-netinst-x86_64-41.iso) = ${A}\n${A}  ./images/mini.iso\nnot a line\n`);
  assert.deepEqual([...sums], [
    ['debian-12.8.0-amd64-netinst.iso', A],
    ['ubuntu-24.04-live-server-amd64.iso', B.toLowerCase()],
    ['Fedora-Everything-netinst-x86_64-41.iso', A],
    ['images/mini.iso', A],
  ]);
  assert.equal(sumFor(sums, 'mini.iso', 'SHA256SUMS'), A, 'by its base name when the list names a directory');
  assert.throws(() => sumFor(sums, 'other.iso', 'SHA256SUMS'), (e: unknown) => e instanceof StiefelError && /SHA256SUMS does not list other\.iso \(it lists debian-12\.8\.0-amd64-netinst\.iso, ubuntu-24\.04-live-server-amd64\.iso, Fedora-Everything-netinst-x86_64-41\.iso, \.\.\.\)/.test(e.message));
  assert.throws(() => sumFor(new Map(), 'x.iso', 'SUMS'), /it lists no SHA-256 at all/);
});

test('property: any text parses into a map of names to 64 hex digits, never throws', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 500 }), (text) => {
      for (const [, hex] of parseSha256Sums(text)) assert.match(hex, /^[0-9a-f]{64}$/);
    }),
  );
});

test("gpgv's status: a VALIDSIG line names the key; GOODSIG alone, or BADSIG, is not enough", () => {
  const fpr = '0123456789ABCDEF0123456789ABCDEF01234567';
  assert.equal(validSignature(`[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 89ABCDEF01234567 test\n[GNUPG:] VALIDSIG ${fpr} 2026-12-01 1764547200 0 4 0 22 10 00 ${fpr}\n`), fpr);
  assert.equal(validSignature('[GNUPG:] GOODSIG 89ABCDEF01234567 test\n'), undefined);
  assert.equal(validSignature('[GNUPG:] BADSIG 89ABCDEF01234567 test\n'), undefined);
  assert.equal(validSignature(`gpgv: [GNUPG:] VALIDSIG ${fpr}`), undefined, 'only at the start of a status line');
});

test("a clear-signed list (Fedora's CHECKSUM) is told from a plain one by its first line only", () => {
  assert.equal(isClearSigned(`-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nSHA256 (x.iso) = ${A}\n`), true);
  assert.equal(isClearSigned('-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n'), true);
  assert.equal(isClearSigned(`${A}  x.iso\n`), false);
  // Text before the header would be outside the signature: not taken as clear-signed (then a detached signature is needed).
  assert.equal(isClearSigned(`SHA256 (x.iso) = ${A}\n-----BEGIN PGP SIGNED MESSAGE-----\n`), false);
  assert.equal(isClearSigned(''), false);
});
