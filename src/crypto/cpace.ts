// CPace, the balanced PAKE of draft-irtf-cfrg-cpace-21, with the cipher suite
// CPACE-RISTR255-SHA512 (group G_Ristretto255, hash SHA-512) in the
// initiator-responder setting. Function names follow the draft's, in
// camelCase; section names below are the draft's.
//
// All group arithmetic is @noble/curves' ristretto255 (RFC 9496): decode,
// encode, scalar multiplication and the element derivation (one-way map from
// 64 uniform bytes). Nothing here touches the curve itself.
//
// cpaceStart and cpaceRespond return the ISK and never K: "A CPace
// implementation SHALL output ISK but MUST NOT expose K" (Key derivation);
// the draft's single steps are exported for its test vectors.
import { randomBytes } from 'node:crypto';
import { ristretto255, ristretto255_hasher } from '@noble/curves/ed25519.js';
import { bytesToNumberLE, concatBytes } from '@noble/curves/utils.js';
import { sha512 } from '@noble/hashes/sha2.js';
import { StiefelError } from '../errors';

type Point = InstanceType<typeof ristretto255.Point>;

/** G_Ristretto255.DSI */
export const DSI = new TextEncoder().encode('CPaceRistretto255');
/** G.DSI || b"_ISK", the prefix of the ISK hash. */
export const DSI_ISK = new TextEncoder().encode('CPaceRistretto255_ISK');
/** H.s_in_bytes of SHA-512: its input block size. */
export const H_S_IN_BYTES = 128;
/** G_Ristretto255.field_size_bytes: length of an encoded element and of a scalar. */
export const FIELD_SIZE_BYTES = 32;
/** G_Ristretto255.group_size_bits */
export const GROUP_SIZE_BITS = 252;
/** G.I, the public encoding of the identity element. */
export const G_I: Uint8Array = ristretto255.Point.ZERO.toBytes();

/** A CPace input or message that would break the protocol; the run must abort. */
export class CpaceError extends StiefelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_CPACE', message, options);
  }
}

/** The length of `data` in LEB128, then `data` (prepend_len). */
export function prependLen(data: Uint8Array): Uint8Array {
  const length: number[] = [];
  let n = data.length;
  do {
    length.push(n < 128 ? n : (n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  } while (n > 0);
  return concatBytes(Uint8Array.from(length), data);
}

/** prepend_len of every argument, concatenated (lv_cat). */
export function lvCat(...args: Uint8Array[]): Uint8Array {
  return concatBytes(...args.map(prependLen));
}

/**
 * lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid): the padding makes DSI and
 * PRS fill the hash's first input block, so how much is hashed does not
 * depend on the length of a short PRS.
 */
export function generatorString(dsi: Uint8Array, prs: Uint8Array, ci: Uint8Array, sid: Uint8Array, sInBytes: number): Uint8Array {
  const lenZpad = Math.max(0, sInBytes - 1 - prependLen(prs).length - prependLen(dsi).length);
  return lvCat(dsi, prs, new Uint8Array(lenZpad), ci, sid);
}

/** G.calculate_generator(H, PRS, CI, sid): element_derivation(H.hash(gen_str, 2 * field_size_bytes)). */
export function calculateGenerator(prs: Uint8Array, ci: Uint8Array, sid: Uint8Array): Point {
  const genStrHash = sha512(generatorString(DSI, prs, ci, sid, H_S_IN_BYTES)).subarray(0, 2 * FIELD_SIZE_BYTES);
  return elementDerivation(genStrHash);
}

/**
 * G.sample_scalar(), as the draft recommends: random bytes with the bits
 * above group_size_bits cleared, read little-endian (always below the group
 * order, which is just over 2^252).
 */
export function sampleScalar(): Uint8Array {
  const scalar = randomBytes(FIELD_SIZE_BYTES);
  scalar[FIELD_SIZE_BYTES - 1]! &= 0xff >> (8 * FIELD_SIZE_BYTES - GROUP_SIZE_BITS);
  return new Uint8Array(scalar);
}

/** G.scalar_mult(y, _g) = encode(y * _g), for our own generator. */
export function scalarMult(y: Uint8Array, g: Point): Uint8Array {
  return g.multiply(decodeScalar(y)).toBytes();
}

/**
 * G.scalar_mult_vfy(y, X) = encode(y * decode(X)). Where the draft returns
 * G.I (X does not decode, or y * X is the identity) this throws instead:
 * "B MUST abort if K=G.I", and a throw cannot be forgotten. The group has
 * prime order and y is not 0 modulo it, so y * X is the identity only when
 * X is.
 */
export function scalarMultVfy(y: Uint8Array, x: Uint8Array): Uint8Array {
  if (x.length !== FIELD_SIZE_BYTES) throw new CpaceError(`a CPace message must be ${FIELD_SIZE_BYTES} bytes, not ${x.length}`);
  let point: Point;
  try {
    point = ristretto255.Point.fromBytes(x);
  } catch (err) {
    throw new CpaceError('the CPace message is not a valid ristretto255 encoding', { cause: err });
  }
  if (point.is0()) throw new CpaceError('the CPace message is the identity element');
  return point.multiply(decodeScalar(y)).toBytes();
}

/** transcript_ir(Ya, ADa, Yb, ADb) = lv_cat(Ya, ADa) || lv_cat(Yb, ADb). */
export function transcriptIr(ya: Uint8Array, adA: Uint8Array, yb: Uint8Array, adB: Uint8Array): Uint8Array {
  return concatBytes(lvCat(ya, adA), lvCat(yb, adB));
}

/** ISK = H.hash(lv_cat(G.DSI || b"_ISK", sid, K) || transcript). */
export function intermediateSessionKey(sid: Uint8Array, k: Uint8Array, transcript: Uint8Array): Uint8Array {
  return sha512(concatBytes(lvCat(DSI_ISK, sid, k), transcript));
}

/** What both parties must agree on; CI, sid and AD default to b"" as in the draft. */
export interface CpaceInputs {
  /** The password-related string. */
  prs: Uint8Array;
  /** Channel identifier: never sent, binds both parties' identities and roles. */
  ci?: Uint8Array;
  /** Session identifier: public, unique per run. */
  sid?: Uint8Array;
  /** This party's associated data, sent in clear alongside its message. */
  ad?: Uint8Array;
  /** This party's secret scalar: only for reproducing the draft's test vectors. */
  scalar?: Uint8Array;
}

export interface CpaceInitiator {
  /** Ya, to send to the responder (with ADa). */
  message: Uint8Array;
  /** Takes the responder's Yb and ADb, returns the ISK (64 bytes). Throws CpaceError on an invalid Yb. */
  finish(peerMessage: Uint8Array, peerAd?: Uint8Array): Uint8Array;
}

/** Party A: computes Ya now, the ISK once Yb arrives. */
export function cpaceStart(o: CpaceInputs): CpaceInitiator {
  const { sid, ad, y, message } = ownShare(o);
  let finished = false;
  return {
    message,
    finish(peerMessage, peerAd = EMPTY) {
      // "Secret scalars ya and yb MUST NOT be reused" (Nonce values).
      if (finished) throw new CpaceError('this CPace run has finished already: start a new one');
      finished = true;
      const k = scalarMultVfy(y, peerMessage);
      return intermediateSessionKey(sid, k, transcriptIr(message, ad, peerMessage, peerAd));
    },
  };
}

/** Party B: takes Ya and ADa, returns Yb (to send with ADb) and the ISK. Throws CpaceError on an invalid Ya. */
export function cpaceRespond(o: CpaceInputs & { peerMessage: Uint8Array; peerAd?: Uint8Array }): { message: Uint8Array; isk: Uint8Array } {
  const { sid, ad, y, message } = ownShare(o);
  const peerAd = o.peerAd ?? EMPTY;
  const k = scalarMultVfy(y, o.peerMessage);
  return { message, isk: intermediateSessionKey(sid, k, transcriptIr(o.peerMessage, peerAd, message, ad)) };
}

const EMPTY = new Uint8Array(0);

function ownShare(o: CpaceInputs): { sid: Uint8Array; ad: Uint8Array; y: Uint8Array; message: Uint8Array } {
  const sid = o.sid ?? EMPTY;
  const y = o.scalar ?? sampleScalar();
  const message = scalarMult(y, calculateGenerator(o.prs, o.ci ?? EMPTY, sid));
  return { sid, ad: o.ad ?? EMPTY, y, message };
}

/** RFC 9496 element derivation from 64 uniform bytes (noble types this method as optional). */
function elementDerivation(uniform: Uint8Array): Point {
  if (ristretto255_hasher.deriveToCurve === undefined) throw new Error('@noble/curves lacks ristretto255 element derivation');
  return ristretto255_hasher.deriveToCurve(uniform);
}

/** A little-endian scalar, reduced modulo the group order; 0 is refused. */
function decodeScalar(y: Uint8Array): bigint {
  if (y.length !== FIELD_SIZE_BYTES) throw new CpaceError(`a CPace scalar must be ${FIELD_SIZE_BYTES} bytes, not ${y.length}`);
  const reduced = ristretto255.Point.Fn.create(bytesToNumberLE(y));
  if (reduced === 0n) throw new CpaceError('the CPace scalar is 0 modulo the group order');
  return reduced;
}
