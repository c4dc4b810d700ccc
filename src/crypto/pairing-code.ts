// Pairing a desktop that holds no secret (it PXE-booted from the laptop) by a
// six-digit code that the laptop's console shows and the user types at the
// desktop. Both run CPace (./cpace.ts) with the code as PRS; the ISK, once
// each side has checked the other's confirmation tag, gives the 32-byte
// secret that this boot uses in place of the one `stiefelctl init` makes
// (sub-keys from it by keys.ts deriveSubKeys, as usual).
//
//   desktop (CPace initiator A)          laptop (CPace responder B)
//   sid = 16 random bytes
//   Ya from the typed code     ---- sid, Ya ---->
//                              <--- Yb, tag(laptop)   Yb from the shown code
//   check tag(laptop)          ---- tag(desktop) --> check tag(desktop)
//
// Why an eavesdropper has nothing to guess offline: Ya = ya * g and
// Yb = yb * g, with g derived from the code and ya, yb uniform secret
// scalars. In a prime-order group y * g is a uniformly random element for
// every generator g, so the messages are distributed the same whatever the
// code is: no candidate code can be tested against them. Testing one needs
// K = ya * yb * g, a Diffie-Hellman solution (the draft's proof reduces to
// sCDH); the tags and the secret come from the ISK, a hash over K, and so
// tell nothing more.
//
// Why an active attacker gets one guess per run: posing as one side it must
// send its own Y = y * g' for one generator g', which fixes one candidate
// code; the honest side's ISK equals the attacker's only if that candidate
// is the code, and K for any other candidate is again a Diffie-Hellman
// problem. So each run answers "is it this one code?", a 1 in 10^6 chance;
// a side whose tag check fails must end the pairing, and the laptop must
// show a new code before it accepts another attempt.
import { createHash, createHmac, hkdfSync, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { cpaceRespond, cpaceStart, lvCat } from './cpace';
import { HKDF_SALT, SECRET_SIZE } from './keys';

export const PAIRING_CODE_DIGITS = 6;
/** Bytes of the CPace sid the desktop picks and sends with its message. */
export const PAIRING_SID_SIZE = 16;
/** Bytes of the CPace ISK (SHA-512). */
export const ISK_SIZE = 64;
export const CONFIRM_TAG_SIZE = 32;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/**
 * CPace CI: both parties' identities in their roles, initiator first as the
 * draft recommends, so a message cannot be reflected or replayed into the
 * other role.
 */
export const PAIRING_CI = lvCat(utf8('stiefelsystem-desktop'), utf8('stiefelsystem-laptop'));

/** HKDF-SHA256 `info` labels of what is derived from the ISK. */
export const PAIRING_LABELS = Object.freeze({
  secret: 'stiefelsystem pairing secret v1',
  confirm: 'stiefelsystem pairing confirm v1',
});

export type PairingRole = 'desktop' | 'laptop';

/** A fresh code as the laptop shows it: "123 456". */
export function newPairingCode(): string {
  const digits = String(randomInt(0, 10 ** PAIRING_CODE_DIGITS)).padStart(PAIRING_CODE_DIGITS, '0');
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}

const CODE_DIGITS = new RegExp(`^[0-9]{${PAIRING_CODE_DIGITS}}$`);

/** The six digits of a code as typed, with spaces and dashes anywhere; undefined if it is not one. */
export function normalizePairingCode(typed: string): string | undefined {
  const digits = typed.replace(/[ -]/g, '');
  return CODE_DIGITS.test(digits) ? digits : undefined;
}

/** The desktop's side: its first message carries `sid` and `message`; `finish` takes the laptop's and returns the ISK. */
export function desktopPairingStart(o: { code: string; sid?: Uint8Array }): {
  sid: Uint8Array;
  message: Uint8Array;
  finish(laptopMessage: Uint8Array): Uint8Array;
} {
  const sid = o.sid ?? new Uint8Array(randomBytes(PAIRING_SID_SIZE));
  const run = cpaceStart({ prs: pairingPrs(o.code), ci: PAIRING_CI, sid });
  return { sid, message: run.message, finish: (laptopMessage) => run.finish(laptopMessage) };
}

/** The laptop's side: from the desktop's sid and message, its reply and the ISK. Throws CpaceError on an invalid message. */
export function laptopPairingRespond(o: { code: string; sid: Uint8Array; desktopMessage: Uint8Array }): {
  message: Uint8Array;
  isk: Uint8Array;
} {
  if (o.sid.length !== PAIRING_SID_SIZE) throw new RangeError(`the pairing sid must be ${PAIRING_SID_SIZE} bytes`);
  return cpaceRespond({ prs: pairingPrs(o.code), ci: PAIRING_CI, sid: o.sid, peerMessage: o.desktopMessage });
}

/**
 * SHA-256 over every pairing message as sent, for the confirmation tags:
 * the ISK already binds the two CPace messages, this binds whatever framing
 * the embedding protocol put around them.
 */
export function pairingTranscriptHash(...messages: Uint8Array[]): Buffer {
  return createHash('sha256').update(lvCat(...messages)).digest();
}

/** The key-confirmation tag `role` sends: HMAC-SHA256 under a key from the ISK, over the role and the transcript hash. */
export function confirmTag(isk: Uint8Array, role: PairingRole, transcriptHash: Uint8Array): Buffer {
  const key = deriveFromIsk(isk, PAIRING_LABELS.confirm, CONFIRM_TAG_SIZE);
  return createHmac('sha256', key).update(lvCat(utf8(role), transcriptHash)).digest();
}

/** Whether `tag` is the one `role` should have sent, compared in constant time. */
export function verifyConfirmTag(isk: Uint8Array, role: PairingRole, transcriptHash: Uint8Array, tag: Uint8Array): boolean {
  const expected = confirmTag(isk, role, transcriptHash);
  return tag.length === expected.length && timingSafeEqual(expected, tag);
}

/** The 32-byte secret of this boot, to use as the shared secret (keys.ts deriveSubKeys). Only after both tags checked. */
export function pairedSecret(isk: Uint8Array): Buffer {
  return deriveFromIsk(isk, PAIRING_LABELS.secret, SECRET_SIZE);
}

/** CPace PRS: the code's six digits in UTF-8. */
function pairingPrs(code: string): Uint8Array {
  const digits = normalizePairingCode(code);
  if (digits === undefined) throw new RangeError('a pairing code is six digits');
  return utf8(digits);
}

function deriveFromIsk(isk: Uint8Array, label: string, size: number): Buffer {
  if (isk.length !== ISK_SIZE) throw new RangeError(`the CPace ISK must be ${ISK_SIZE} bytes`);
  return Buffer.from(hkdfSync('sha256', isk, HKDF_SALT, label, size));
}
