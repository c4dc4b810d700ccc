// Discovery datagrams: pure encode/decode, no sockets, clocks or randomness
// (the caller passes the time and the nonce).
//
//   offset  size  field
//   0       4     magic "STFD"
//   4       1     version (DISCOVERY_VERSION)
//   5       1     type: FIND_SERVER (client -> all) or SERVER_HELLO (server -> client)
//   6       2     body length, big endian
//   8       8     timestamp, ms since the epoch, big endian
//   16      16    nonce: fresh random bytes for every datagram
//   32      n     body (see below)
//   32+n    32    HMAC-SHA256 under the discovery sub-key of bytes 0 .. 32+n
//
//   FIND_SERVER body:   u8 name length, name (the client's host name, UTF-8)
//   SERVER_HELLO body:  16 bytes request nonce (the FIND_SERVER it answers),
//                       u16 payload (HTTPS) port, u8 flags, u8 name length, name
//
// The secret never appears: only a MAC over fresh data. A reply names the
// nonce of the request it answers, so an old reply cannot answer a new request.
import { createHmac, timingSafeEqual } from 'node:crypto';

export const DISCOVERY_MAGIC = Buffer.from('STFD', 'ascii');
export const DISCOVERY_VERSION = 1;
export const DISCOVERY_TYPE_FIND_SERVER = 1;
export const DISCOVERY_TYPE_SERVER_HELLO = 2;
export const DISCOVERY_HEADER_SIZE = 32;
export const DISCOVERY_TAG_SIZE = 32;
export const DISCOVERY_NONCE_SIZE = 16;
export const DISCOVERY_MAX_NAME = 64;
/** Largest datagram either side sends or accepts. */
export const DISCOVERY_MAX_SIZE = 512;

/** SERVER_HELLO flag: the server is busy with another client. */
export const HELLO_FLAG_BUSY = 0x01;

export interface FindServer {
  type: 'find-server';
  timestampMs: number;
  nonce: Buffer;
  clientName: string;
}

export interface ServerHello {
  type: 'server-hello';
  timestampMs: number;
  nonce: Buffer;
  requestNonce: Buffer;
  payloadPort: number;
  busy: boolean;
  serverName: string;
}

export type DiscoveryMessage = FindServer | ServerHello;

/** Why a datagram was dropped; each reason has its own counter. */
export type DropReason =
  | 'truncated' // shorter than a datagram, or shorter than its body length says
  | 'foreign' // not our magic: some other protocol on this port
  | 'version' // our magic, a version we do not speak
  | 'bad-tag' // the MAC does not match: a different secret, or tampered
  | 'malformed' // authentic but the body does not parse (a bug on the other side)
  | 'unexpected' // authentic, but not the type this side waits for, or not bound to our request
  | 'stale' // timestamp too far from our clock
  | 'replay'; // nonce seen before

export type DecodeResult = { ok: true; message: DiscoveryMessage } | { ok: false; reason: DropReason };

function nameBytes(name: string): Buffer {
  // Truncate on a character boundary so the name stays valid UTF-8.
  let b = Buffer.from(name, 'utf8');
  while (b.length > DISCOVERY_MAX_NAME) {
    name = name.slice(0, -1);
    b = Buffer.from(name, 'utf8');
  }
  return b;
}

function tag(key: Uint8Array, data: Uint8Array): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

export function encodeDiscovery(message: DiscoveryMessage, key: Uint8Array): Buffer {
  if (message.nonce.length !== DISCOVERY_NONCE_SIZE) throw new RangeError('discovery nonce must be 16 bytes');
  let body: Buffer;
  let type: number;
  if (message.type === 'find-server') {
    type = DISCOVERY_TYPE_FIND_SERVER;
    const name = nameBytes(message.clientName);
    body = Buffer.concat([Buffer.from([name.length]), name]);
  } else {
    type = DISCOVERY_TYPE_SERVER_HELLO;
    if (message.requestNonce.length !== DISCOVERY_NONCE_SIZE) throw new RangeError('request nonce must be 16 bytes');
    if (!Number.isInteger(message.payloadPort) || message.payloadPort < 1 || message.payloadPort > 65535) {
      throw new RangeError(`payload port ${message.payloadPort} out of range`);
    }
    const name = nameBytes(message.serverName);
    const fixed = Buffer.alloc(4);
    fixed.writeUInt16BE(message.payloadPort, 0);
    fixed[2] = message.busy ? HELLO_FLAG_BUSY : 0;
    fixed[3] = name.length;
    body = Buffer.concat([message.requestNonce, fixed, name]);
  }
  const head = Buffer.alloc(DISCOVERY_HEADER_SIZE);
  DISCOVERY_MAGIC.copy(head, 0);
  head[4] = DISCOVERY_VERSION;
  head[5] = type;
  head.writeUInt16BE(body.length, 6);
  if (!Number.isSafeInteger(message.timestampMs) || message.timestampMs < 0) throw new RangeError('bad timestamp');
  head.writeBigUInt64BE(BigInt(message.timestampMs), 8);
  message.nonce.copy(head, 16);
  const signed = Buffer.concat([head, body]);
  return Buffer.concat([signed, tag(key, signed)]);
}

/**
 * Checks framing and the MAC, then parses. Never throws on bad input: every
 * way a datagram can be wrong maps to a DropReason.
 */
export function decodeDiscovery(data: Uint8Array, key: Uint8Array): DecodeResult {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length >= 4 && !buf.subarray(0, 4).equals(DISCOVERY_MAGIC)) return { ok: false, reason: 'foreign' };
  if (buf.length < DISCOVERY_HEADER_SIZE + DISCOVERY_TAG_SIZE) {
    return { ok: false, reason: buf.length < 4 ? 'foreign' : 'truncated' };
  }
  if (buf[4] !== DISCOVERY_VERSION) return { ok: false, reason: 'version' };
  const bodyLength = buf.readUInt16BE(6);
  const end = DISCOVERY_HEADER_SIZE + bodyLength;
  if (buf.length < end + DISCOVERY_TAG_SIZE) return { ok: false, reason: 'truncated' };
  // Trailing bytes after the tag are not ours to accept either.
  if (buf.length !== end + DISCOVERY_TAG_SIZE) return { ok: false, reason: 'malformed' };
  const expected = tag(key, buf.subarray(0, end));
  if (!timingSafeEqual(expected, buf.subarray(end, end + DISCOVERY_TAG_SIZE))) return { ok: false, reason: 'bad-tag' };

  const timestamp = buf.readBigUInt64BE(8);
  if (timestamp > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: 'malformed' };
  const timestampMs = Number(timestamp);
  const nonce = Buffer.from(buf.subarray(16, 32));
  const body = buf.subarray(DISCOVERY_HEADER_SIZE, end);
  const readName = (at: number): string | undefined => {
    if (body.length < at + 1) return undefined;
    const n = body[at]!;
    if (n > DISCOVERY_MAX_NAME || body.length !== at + 1 + n) return undefined;
    const bytes = body.subarray(at + 1, at + 1 + n);
    const name = bytes.toString('utf8');
    // Only printable text: names end up on screens and in logs.
    if (!Buffer.from(name, 'utf8').equals(bytes) || /[\x00-\x1f\x7f]/.test(name)) return undefined;
    return name;
  };
  switch (buf[5]) {
    case DISCOVERY_TYPE_FIND_SERVER: {
      const clientName = readName(0);
      if (clientName === undefined) return { ok: false, reason: 'malformed' };
      return { ok: true, message: { type: 'find-server', timestampMs, nonce, clientName } };
    }
    case DISCOVERY_TYPE_SERVER_HELLO: {
      if (body.length < DISCOVERY_NONCE_SIZE + 4) return { ok: false, reason: 'malformed' };
      const payloadPort = body.readUInt16BE(16);
      const serverName = readName(19);
      if (serverName === undefined || payloadPort === 0) return { ok: false, reason: 'malformed' };
      return {
        ok: true,
        message: {
          type: 'server-hello',
          timestampMs,
          nonce,
          requestNonce: Buffer.from(body.subarray(0, 16)),
          payloadPort,
          busy: (body[18]! & HELLO_FLAG_BUSY) !== 0,
          serverName,
        },
      };
    }
    default:
      return { ok: false, reason: 'malformed' };
  }
}
