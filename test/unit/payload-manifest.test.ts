import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { decodeManifest, encodeManifest, ManifestError, type Manifest } from '../../src/payload/manifest';
import { MIN_PIECE_SIZE } from '../../src/payload/pieces';

const key = Buffer.alloc(32, 9);
const nonce = 'a'.repeat(32);
const manifest: Manifest = {
  version: 1,
  nonce,
  session: 'b'.repeat(32),
  serverName: 'laptop',
  issuedAtMs: 1_700_000_000_000,
  family: 'initramfs-tools',
  attach: 'stiefelsystem',
  cmdline: 'root=UUID=1234 ro quiet',
  files: [
    { name: 'kernel', size: 10, pieceSize: MIN_PIECE_SIZE, pieceSha256: ['1'.repeat(64)] },
    { name: 'initrd', size: 2 * MIN_PIECE_SIZE + 1, pieceSize: MIN_PIECE_SIZE, pieceSha256: ['2'.repeat(64), '3'.repeat(64), '4'.repeat(64)] },
  ],
  nbd: { port: 10809, export: 'disk', blockSize: 512 },
  link: {
    wireguard: {
      clientPrivateKey: `${'A'.repeat(43)}=`,
      clientAddress: '10.83.70.2/30',
      serverPublicKey: `${'B'.repeat(43)}=`,
      serverAddress: '10.83.70.1',
      serverPort: 51820,
    },
  },
};

function expectError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof ManifestError && pattern.test(e.message));
}

test('a manifest decodes to what was encoded', () => {
  assert.deepEqual(decodeManifest(encodeManifest(manifest, key), key, { nonce }), manifest);
  const noLink = { ...manifest, link: {} };
  assert.deepEqual(decodeManifest(encodeManifest(noLink, key), key, { nonce }), noLink);
});

test('the envelope is JSON with base64 manifest bytes and their HMAC-SHA256', () => {
  const env = JSON.parse(encodeManifest(manifest, key).toString()) as { manifest: string; hmac: string };
  const bytes = Buffer.from(env.manifest, 'base64');
  assert.deepEqual(JSON.parse(bytes.toString()), manifest);
  assert.equal(env.hmac, createHmac('sha256', key).update(bytes).digest('hex'));
});

test('a manifest signed with another key is refused', () => {
  expectError(() => decodeManifest(encodeManifest(manifest, Buffer.alloc(32, 1)), key, { nonce }), /signature does not match/);
});

test('a manifest for another request (a replay) is refused', () => {
  expectError(() => decodeManifest(encodeManifest(manifest, key), key, { nonce: 'c'.repeat(32) }), /answers another request/);
});

test('a tampered manifest is refused: any changed byte of the signed text', () => {
  const env = JSON.parse(encodeManifest(manifest, key).toString()) as { manifest: string; hmac: string };
  const bytes = Buffer.from(env.manifest, 'base64');
  fc.assert(
    fc.property(fc.integer({ min: 0, max: bytes.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
      const t = Buffer.from(bytes);
      t[i]! ^= x;
      const forged = Buffer.from(JSON.stringify({ manifest: t.toString('base64'), hmac: env.hmac }));
      assert.throws(() => decodeManifest(forged, key, { nonce }), ManifestError);
    }),
    { numRuns: 300 },
  );
  // A bigger initrd with a re-computed digest, same signature: refused.
  const bigger = { ...manifest, files: [manifest.files[0]!, { ...manifest.files[1]!, pieceSha256: ['5'.repeat(64), '3'.repeat(64), '4'.repeat(64)] }] };
  const forged = Buffer.from(JSON.stringify({ manifest: Buffer.from(JSON.stringify(bigger)).toString('base64'), hmac: env.hmac }));
  expectError(() => decodeManifest(forged, key, { nonce }), /signature does not match/);
});

test('a truncated envelope is refused', () => {
  const e = encodeManifest(manifest, key);
  for (const n of [0, 1, 10, e.length >> 1, e.length - 1]) assert.throws(() => decodeManifest(e.subarray(0, n), key, { nonce }), ManifestError);
});

test('a well-signed manifest of the wrong shape is refused', () => {
  const signed = (m: unknown): Buffer => {
    const bytes = Buffer.from(JSON.stringify(m));
    return Buffer.from(JSON.stringify({ manifest: bytes.toString('base64'), hmac: createHmac('sha256', key).update(bytes).digest('hex') }));
  };
  expectError(() => decodeManifest(signed({ ...manifest, version: 2 }), key, { nonce }), /version 2/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [manifest.files[0], manifest.files[0]] }), key, { nonce }), /once each/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [{ ...manifest.files[0], size: -1 }, manifest.files[1]] }), key, { nonce }), /size of kernel/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [{ ...manifest.files[0], pieceSha256: ['xyz'] }, manifest.files[1]] }), key, { nonce }), /piece sha256 of kernel/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [manifest.files[0], { ...manifest.files[1], pieceSha256: ['2'.repeat(64)] }] }), key, { nonce }), /initrd must list 3 piece digests/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [{ ...manifest.files[0], pieceSize: MIN_PIECE_SIZE + 1 }, manifest.files[1]] }), key, { nonce }), /power of two/);
  expectError(() => decodeManifest(signed({ ...manifest, files: [{ ...manifest.files[0], pieceSize: 4096 }, manifest.files[1]] }), key, { nonce }), /piece size of kernel/);
  expectError(() => decodeManifest(signed({ ...manifest, family: 'gentoo' }), key, { nonce }), /family/);
  expectError(() => decodeManifest(signed({ ...manifest, extra: 1 }), key, { nonce }), /unknown field extra/);
  expectError(() => decodeManifest(signed({ ...manifest, cmdline: 'a\nb' }), key, { nonce }), /cmdline/);
  expectError(() => decodeManifest(signed({ ...manifest, link: { wireguard: { ...manifest.link.wireguard, clientPrivateKey: 'short' } } }), key, { nonce }), /clientPrivateKey/);
  for (const mtu of [1279, 9001, 1500.5, '9000']) expectError(() => decodeManifest(signed({ ...manifest, link: { ...manifest.link, mtu } }), key, { nonce }), /link\.mtu/);
  assert.equal(decodeManifest(signed({ ...manifest, link: { ...manifest.link, mtu: 9000 } }), key, { nonce }).link.mtu, 9000);
  for (const connections of [0, 9, 1.5, '2']) expectError(() => decodeManifest(signed({ ...manifest, nbd: { ...manifest.nbd, connections } }), key, { nonce }), /nbd\.connections/);
  assert.equal(decodeManifest(signed({ ...manifest, nbd: { ...manifest.nbd, connections: 4 } }), key, { nonce }).nbd.connections, 4);
});

test('property: decoding arbitrary bytes never throws anything but ManifestError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (b) => {
      try {
        decodeManifest(b, key, { nonce });
        return false;
      } catch (e) {
        return e instanceof ManifestError;
      }
    }),
    { numRuns: 1000 },
  );
});
