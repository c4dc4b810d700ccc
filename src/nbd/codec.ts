// Pure encoders and decoders of the NBD messages a server sends and reads
// (the incremental parser of the client's byte stream is
// client-stream-parser.ts). No sockets, files, clocks or randomness.
import {
  IHAVEOPT,
  NBDMAGIC,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAX_STRING,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
} from './protocol';

const TWO32 = 0x1_0000_0000;

/** One transmission-phase request as the client sent it. */
export interface NbdRequest {
  flags: number;
  type: number;
  /** The 64-bit handle as two 32-bit halves: echoed back, never interpreted. */
  handleHi: number;
  handleLo: number;
  /** Exact below 2^53; larger values are only ever compared against the export size. */
  offset: number;
  length: number;
}

export interface BlockExtent {
  length: number;
  /** NBD_STATE_HOLE / NBD_STATE_ZERO bits (base:allocation). */
  flags: number;
}

// ---------------------------------------------------------------------------
// Encoders

/** The server's first 18 bytes: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(flags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES): Buffer {
  const b = Buffer.alloc(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(flags, 16);
  return b;
}

/** A fixed-newstyle option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, 20);
  return b;
}

/** An error option reply carrying a message for the user (truncated to the spec's 4096 bytes). */
export function encodeOptionError(option: number, replyType: number, message: string): Buffer {
  return encodeOptionReply(option, replyType, encodeString(message));
}

export function encodeRepServer(option: number, name: string, description = ''): Buffer {
  const n = encodeString(name);
  const d = encodeString(description);
  const data = Buffer.alloc(4 + n.length + d.length);
  data.writeUInt32BE(n.length, 0);
  data.set(n, 4);
  data.set(d, 4 + n.length);
  return encodeOptionReply(option, NBD_REP_SERVER, data);
}

export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Buffer {
  const data = Buffer.alloc(12);
  data.writeUInt16BE(NBD_INFO_EXPORT, 0);
  writeU64(data, 2, size);
  data.writeUInt16BE(transmissionFlags, 10);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

export function encodeInfoString(option: number, infoType: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = encodeString(text);
  const data = Buffer.alloc(2 + s.length);
  data.writeUInt16BE(infoType, 0);
  data.set(s, 2);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

export interface BlockSizeConstraints {
  minimum: number;
  preferred: number;
  maximum: number;
}

export function encodeInfoBlockSize(option: number, c: BlockSizeConstraints): Buffer {
  const data = Buffer.alloc(14);
  data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  data.writeUInt32BE(c.minimum, 2);
  data.writeUInt32BE(c.preferred, 6);
  data.writeUInt32BE(c.maximum, 10);
  return encodeOptionReply(option, NBD_REP_INFO, data);
}

export function encodeRepMetaContext(option: number, contextId: number, name: string): Buffer {
  const s = encodeString(name);
  const data = Buffer.alloc(4 + s.length);
  data.writeUInt32BE(contextId, 0);
  data.set(s, 4);
  return encodeOptionReply(option, NBD_REP_META_CONTEXT, data);
}

/** Reply to NBD_OPT_EXPORT_NAME: size, transmission flags, 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  writeU64(b, 0, size);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** Writes a 16-byte simple reply header at `off` (the data, if any, follows it). */
export function writeSimpleReplyHeader(b: Buffer, off: number, error: number, handleHi: number, handleLo: number): void {
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, off);
  b.writeUInt32BE(error >>> 0, off + 4);
  b.writeUInt32BE(handleHi, off + 8);
  b.writeUInt32BE(handleLo, off + 12);
}

export function encodeSimpleReply(error: number, handleHi: number, handleLo: number): Buffer {
  const b = Buffer.allocUnsafe(NBD_SIMPLE_REPLY_SIZE);
  writeSimpleReplyHeader(b, 0, error, handleHi, handleLo);
  return b;
}

/** Writes a 20-byte structured reply chunk header at `off`. */
export function writeStructuredHeader(
  b: Buffer,
  off: number,
  flags: number,
  type: number,
  handleHi: number,
  handleLo: number,
  length: number,
): void {
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, off);
  b.writeUInt16BE(flags, off + 4);
  b.writeUInt16BE(type, off + 6);
  b.writeUInt32BE(handleHi, off + 8);
  b.writeUInt32BE(handleLo, off + 12);
  b.writeUInt32BE(length, off + 16);
}

/** Bytes in front of the data of an NBD_REPLY_TYPE_OFFSET_DATA chunk: header and offset. */
export const OFFSET_DATA_PREFIX = NBD_STRUCTURED_REPLY_SIZE + 8;

export function writeOffsetDataPrefix(b: Buffer, off: number, flags: number, handleHi: number, handleLo: number, offset: number, dataLength: number): void {
  writeStructuredHeader(b, off, flags, NBD_REPLY_TYPE_OFFSET_DATA, handleHi, handleLo, 8 + dataLength);
  writeU64(b, off + NBD_STRUCTURED_REPLY_SIZE, offset);
}

export function encodeStructuredNone(handleHi: number, handleLo: number): Buffer {
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_SIZE);
  writeStructuredHeader(b, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, handleHi, handleLo, 0);
  return b;
}

/** A final NBD_REPLY_TYPE_ERROR chunk with a message for the user. */
export function encodeStructuredError(handleHi: number, handleLo: number, error: number, message: string): Buffer {
  const m = encodeString(message);
  const b = Buffer.alloc(NBD_STRUCTURED_REPLY_SIZE + 6 + m.length);
  writeStructuredHeader(b, 0, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, handleHi, handleLo, 6 + m.length);
  b.writeUInt32BE(error, NBD_STRUCTURED_REPLY_SIZE);
  b.writeUInt16BE(m.length, NBD_STRUCTURED_REPLY_SIZE + 4);
  b.set(m, NBD_STRUCTURED_REPLY_SIZE + 6);
  return b;
}

export function encodeBlockStatus(handleHi: number, handleLo: number, contextId: number, extents: readonly BlockExtent[], flags = NBD_REPLY_FLAG_DONE): Buffer {
  const len = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_REPLY_SIZE + len);
  writeStructuredHeader(b, 0, flags, NBD_REPLY_TYPE_BLOCK_STATUS, handleHi, handleLo, len);
  b.writeUInt32BE(contextId, NBD_STRUCTURED_REPLY_SIZE);
  let o = NBD_STRUCTURED_REPLY_SIZE + 4;
  for (const e of extents) {
    b.writeUInt32BE(e.length, o);
    b.writeUInt32BE(e.flags, o + 4);
    o += 8;
  }
  return b;
}

// ---------------------------------------------------------------------------
// Decoders of option data (the option header is split off by the parser)

export class NbdDecodeError extends Error {}

const utf8 = new TextDecoder('utf-8', { fatal: true });
const EMPTY = Buffer.alloc(0);

/** Encodes a protocol string: UTF-8, no NULs, at most NBD_MAX_STRING bytes (cut at a character boundary). */
export function encodeString(s: string): Buffer {
  let b = Buffer.from(s.replace(/\0/g, ''), 'utf8');
  if (b.length > NBD_MAX_STRING) {
    let end = NBD_MAX_STRING;
    while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
    b = b.subarray(0, end);
  }
  return b;
}

/** "a sequence of UTF-8 code points, which is not NUL terminated, MUST NOT contain NUL characters ... MUST be no longer than 4096 bytes" */
export function decodeString(b: Uint8Array, what: string): string {
  if (b.length > NBD_MAX_STRING) throw new NbdDecodeError(`${what} is longer than ${NBD_MAX_STRING} bytes`);
  if (b.includes(0)) throw new NbdDecodeError(`${what} contains a NUL character`);
  try {
    return utf8.decode(b);
  } catch {
    throw new NbdDecodeError(`${what} is not valid UTF-8`);
  }
}

export interface GoOption {
  name: string;
  /** NBD_INFO_* types the client asked for, in its order. */
  infoRequests: number[];
}

/**
 * Data of NBD_OPT_INFO / NBD_OPT_GO: 32-bit name length ("MUST be no larger
 * than the option data length - 6"), name, 16-bit count, 16-bit requests.
 */
export function decodeGoOption(data: Buffer): GoOption {
  if (data.length < 6) throw new NbdDecodeError('option data shorter than 6 bytes');
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) throw new NbdDecodeError('export name length exceeds the option data');
  const name = decodeString(data.subarray(4, 4 + nameLen), 'export name');
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) throw new NbdDecodeError('number of information requests does not match the option length');
  const infoRequests: number[] = [];
  for (let i = 0; i < count; i++) infoRequests.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { name, infoRequests };
}

export interface MetaContextOption {
  exportName: string;
  queries: string[];
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
export function decodeMetaContextOption(data: Buffer): MetaContextOption {
  // "If the option request is syntactically invalid (such as a query length
  // that would require reading beyond the original length given in the
  // option header), the server MUST fail the request with NBD_REP_ERR_INVALID."
  if (data.length < 8) throw new NbdDecodeError('option data shorter than 8 bytes');
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) throw new NbdDecodeError('export name length exceeds the option data');
  const exportName = decodeString(data.subarray(4, 4 + nameLen), 'export name');
  let o = 4 + nameLen;
  const count = data.readUInt32BE(o);
  o += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (o + 4 > data.length) throw new NbdDecodeError('query count exceeds the option data');
    const qLen = data.readUInt32BE(o);
    o += 4;
    if (qLen > data.length - o) throw new NbdDecodeError('query length exceeds the option data');
    queries.push(decodeString(data.subarray(o, o + qLen), 'query'));
    o += qLen;
  }
  if (o !== data.length) throw new NbdDecodeError('trailing bytes after the queries');
  return { exportName, queries };
}

/** Decodes a 28-byte request header at `off`; null when the magic is wrong. */
export function decodeRequestHeader(b: Buffer, off = 0): NbdRequest | null {
  if (b.readUInt32BE(off) !== NBD_REQUEST_MAGIC) return null;
  return {
    flags: b.readUInt16BE(off + 4),
    type: b.readUInt16BE(off + 6),
    handleHi: b.readUInt32BE(off + 8),
    handleLo: b.readUInt32BE(off + 12),
    offset: b.readUInt32BE(off + 16) * TWO32 + b.readUInt32BE(off + 20),
    length: b.readUInt32BE(off + 24),
  };
}

function writeU64(b: Buffer, off: number, value: number): void {
  b.writeUInt32BE(Math.floor(value / TWO32) >>> 0, off);
  b.writeUInt32BE(value >>> 0, off + 4);
}

