// WireGuard keys (Curve25519, 32 bytes, base64 as `wg` prints them), made with
// Node's crypto so that nothing but the kernel module and `wg set` is needed.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';

export interface WireGuardKeyPair {
  privateKey: string;
  publicKey: string;
}

// DER prefixes of X25519 keys in PKCS#8 and SPKI form (RFC 8410); the raw key
// is the 32 bytes that follow.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export const WG_KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/;

export function generateWireGuardKeyPair(): WireGuardKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const priv = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_X25519_PREFIX.length);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519_PREFIX.length);
  return { privateKey: priv.toString('base64'), publicKey: pub.toString('base64') };
}

/** The public key of a base64 private key, as `wg pubkey` computes it. */
export function wireGuardPublicKey(privateKey: string): string {
  const raw = Buffer.from(privateKey, 'base64');
  if (raw.length !== 32) throw new RangeError('a WireGuard private key is 32 bytes');
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  return createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519_PREFIX.length).toString('base64');
}

/** A random unique-local /64 (RFC 4193) for one boot's tunnel: fdXX:XXXX:XXXX::/64. */
export function randomTunnelPrefix(random: (n: number) => Buffer = randomBytes): string {
  const b = random(5);
  const hex = (i: number): string => b.readUInt16BE(i).toString(16);
  return `fd${b[0]!.toString(16).padStart(2, '0')}:${hex(1)}:${hex(3)}:`;
}
