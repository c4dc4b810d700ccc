// The shared secret and the keys derived from it.
//
// One 32-byte secret is shared by the laptop and the desktop (made by
// `stiefelctl init`). Nothing uses it directly: every purpose gets its own
// sub-key by HKDF-SHA256 (RFC 5869) with a distinct label, so a key that
// leaks or is misused in one protocol says nothing about the others, and
// neither the secret nor any fixed function of it is ever sent.
import { hkdfSync } from 'node:crypto';

export const SECRET_SIZE = 32;
export const SUBKEY_SIZE = 32;

/** HKDF salt: fixed, public, names the application (RFC 5869 section 3.1). */
export const HKDF_SALT = 'stiefelsystem hkdf salt v1';

/** HKDF `info` labels, one per purpose. Changing one changes that key only. */
export const KEY_LABELS = Object.freeze({
  /** HMAC-SHA256 of discovery datagrams. */
  discovery: 'stiefelsystem discovery hmac v1',
  /** TLS 1.2 pre-shared key of the payload HTTPS channel. */
  payloadPsk: 'stiefelsystem payload tls-psk v1',
  /** HMAC-SHA256 signature of the payload manifest. */
  manifest: 'stiefelsystem manifest hmac v1',
  /** Requests that make the laptop kexec into stiefelOS (autokexec). */
  autokexec: 'stiefelsystem autokexec hmac v1',
});

export type KeyPurpose = keyof typeof KEY_LABELS;

export type SubKeys = Readonly<Record<KeyPurpose, Buffer>>;

export function deriveKey(secret: Uint8Array, purpose: KeyPurpose): Buffer {
  if (secret.length !== SECRET_SIZE) throw new RangeError(`the shared secret must be ${SECRET_SIZE} bytes`);
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, KEY_LABELS[purpose], SUBKEY_SIZE));
}

export function deriveSubKeys(secret: Uint8Array): SubKeys {
  const keys = {} as Record<KeyPurpose, Buffer>;
  for (const purpose of Object.keys(KEY_LABELS) as KeyPurpose[]) keys[purpose] = deriveKey(secret, purpose);
  return Object.freeze(keys);
}
