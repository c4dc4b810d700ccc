// Pure encoders and decoders of NBD messages (server side), and an
// incremental parser of the client's byte stream. No sockets, files, clocks
// or randomness: messages arrive split across chunks in any way and the
// parser copes; the session (session.ts) decides what each message means.
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
  NBD_OPTION_HEADER_SIZE,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
  NBD_CMD_WRITE,
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
  writeStructuredHeader(b, off, flags, 1 /* NBD_REPLY_TYPE_OFFSET_DATA */, handleHi, handleLo, 8 + dataLength);
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

// Client-side encoders: the exact inverse of what the parser reads. Used by
// tests and fuzzers to speak to the server; pure like the rest.

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function encodeOption(option: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(NBD_OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, 16);
  return b;
}

export function encodeGoOptionData(name: string, infoRequests: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(6 + n.length + 2 * infoRequests.length);
  b.writeUInt32BE(n.length, 0);
  b.set(n, 4);
  b.writeUInt16BE(infoRequests.length, 4 + n.length);
  infoRequests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

export function encodeMetaContextOptionData(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

export function encodeRequest(req: NbdRequest, payload?: Uint8Array): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_SIZE + (payload?.length ?? 0));
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeUInt32BE(req.handleHi >>> 0, 8);
  b.writeUInt32BE(req.handleLo >>> 0, 12);
  writeU64(b, 16, req.offset);
  b.writeUInt32BE(req.length >>> 0, 24);
  if (payload) b.set(payload, NBD_REQUEST_SIZE);
  return b;
}

function writeU64(b: Buffer, off: number, value: number): void {
  b.writeUInt32BE(Math.floor(value / TWO32) >>> 0, off);
  b.writeUInt32BE(value >>> 0, off + 4);
}

// ---------------------------------------------------------------------------
// Incremental parser of the client's byte stream

export type ClientMessage =
  /** The 32 client flags that follow the greeting. */
  | { kind: 'client-flags'; flags: number }
  /** One option with its data (at most `maxOptionData` bytes). */
  | { kind: 'option'; option: number; data: Buffer }
  /** An option whose data was longer than `maxOptionData`: the data was skipped. */
  | { kind: 'option-too-big'; option: number; length: number }
  /**
   * A request. For NBD_CMD_WRITE `payload` holds the data as slices of the
   * received chunks (zero-copy), or is null when the length exceeded
   * `maxPayload`: then the data is skipped without being stored.
   */
  | { kind: 'request'; request: NbdRequest; payload: Buffer[] | null }
  /** The stream cannot be understood any more (wrong magic): the session must end. */
  | { kind: 'protocol-error'; message: string };

export interface ClientParserOptions {
  maxOptionData: number;
  maxPayload: number;
}

const enum Phase {
  ClientFlags,
  OptionHeader,
  OptionData,
  RequestHeader,
  Payload,
  Dead,
}

/**
 * Splits the client's byte stream into messages. The phase changes from
 * options to requests only when the session says so (`startTransmission`),
 * from inside its handler for the option that ended the handshake: the
 * client may send its first requests in the same chunk.
 */
export class ClientStreamParser {
  #phase = Phase.ClientFlags;
  #header = Buffer.alloc(NBD_REQUEST_SIZE);
  #headerHave = 0;
  #need = 4;
  // Option data / write payload being collected.
  #option = 0;
  #request: NbdRequest | null = null;
  #parts: Buffer[] | null = null;
  #collected: Buffer | null = null;
  #remaining = 0;
  #tooBigLength = 0;
  readonly #onMessage: (m: ClientMessage) => void;
  readonly #options: ClientParserOptions;

  constructor(options: ClientParserOptions, onMessage: (m: ClientMessage) => void) {
    this.#options = options;
    this.#onMessage = onMessage;
  }

  get dead(): boolean {
    return this.#phase === Phase.Dead;
  }

  /** Switch to transmission: the next bytes are requests. */
  startTransmission(): void {
    if (this.#phase === Phase.Dead) return;
    this.#phase = Phase.RequestHeader;
    this.#need = NBD_REQUEST_SIZE;
    this.#headerHave = 0;
  }

  /** Stop parsing: everything after this is ignored. */
  stop(): void {
    this.#phase = Phase.Dead;
  }

  push(chunk: Buffer): void {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      const phase = this.#phase;
      if (phase === Phase.Dead) return;
      if (phase === Phase.OptionData || phase === Phase.Payload) {
        const n = Math.min(this.#remaining, len - off);
        if (this.#collected) chunk.copy(this.#collected, this.#collected.length - this.#remaining, off, off + n);
        else if (this.#parts) this.#parts.push(chunk.subarray(off, off + n));
        off += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#finishData();
        continue;
      }
      // A fixed-size header: parse in place when the chunk holds it whole.
      const need = this.#need;
      let hb: Buffer;
      let ho: number;
      if (this.#headerHave === 0 && len - off >= need) {
        hb = chunk;
        ho = off;
        off += need;
      } else {
        const n = Math.min(need - this.#headerHave, len - off);
        chunk.copy(this.#header, this.#headerHave, off, off + n);
        this.#headerHave += n;
        off += n;
        if (this.#headerHave < need) return;
        this.#headerHave = 0;
        hb = this.#header;
        ho = 0;
      }
      this.#onHeader(hb, ho);
    }
  }

  #onHeader(b: Buffer, o: number): void {
    switch (this.#phase) {
      case Phase.ClientFlags:
        this.#phase = Phase.OptionHeader;
        this.#need = NBD_OPTION_HEADER_SIZE;
        this.#onMessage({ kind: 'client-flags', flags: b.readUInt32BE(o) });
        return;
      case Phase.OptionHeader: {
        if (b.readBigUInt64BE(o) !== IHAVEOPT) {
          this.#fail('option does not start with IHAVEOPT');
          return;
        }
        const option = b.readUInt32BE(o + 8);
        const length = b.readUInt32BE(o + 12);
        this.#option = option;
        if (length === 0) {
          this.#onMessage({ kind: 'option', option, data: EMPTY });
          return;
        }
        this.#phase = Phase.OptionData;
        this.#remaining = length;
        if (length > this.#options.maxOptionData) {
          // Skipped as it streams in, reported once skipped.
          this.#collected = null;
          this.#parts = null;
          this.#tooBigLength = length;
        } else {
          this.#collected = Buffer.allocUnsafe(length);
          this.#tooBigLength = 0;
        }
        return;
      }
      case Phase.RequestHeader: {
        const request = decodeRequestHeader(b, o);
        if (!request) {
          this.#fail('request does not start with NBD_REQUEST_MAGIC');
          return;
        }
        if (request.type === NBD_CMD_WRITE && request.length > 0) {
          this.#phase = Phase.Payload;
          this.#remaining = request.length;
          this.#collected = null;
          if (request.length <= this.#options.maxPayload) {
            this.#request = request;
            this.#parts = [];
          } else {
            // Too large to hold: report it now (the session replies at
            // once) and skip the data as it streams in, storing none of it.
            this.#request = null;
            this.#parts = null;
            this.#onMessage({ kind: 'request', request, payload: null });
          }
          return;
        }
        this.#onMessage({ kind: 'request', request, payload: request.type === NBD_CMD_WRITE ? [] : null });
        return;
      }
      default:
        return;
    }
  }

  #finishData(): void {
    if (this.#phase === Phase.OptionData) {
      this.#phase = Phase.OptionHeader;
      this.#need = NBD_OPTION_HEADER_SIZE;
      const data = this.#collected;
      this.#collected = null;
      if (data) this.#onMessage({ kind: 'option', option: this.#option, data });
      else this.#onMessage({ kind: 'option-too-big', option: this.#option, length: this.#tooBigLength });
      return;
    }
    // Payload
    this.#phase = Phase.RequestHeader;
    this.#need = NBD_REQUEST_SIZE;
    const request = this.#request;
    const payload = this.#parts;
    this.#request = null;
    this.#parts = null;
    if (request) this.#onMessage({ kind: 'request', request, payload });
  }

  #fail(message: string): void {
    this.#phase = Phase.Dead;
    this.#onMessage({ kind: 'protocol-error', message });
  }
}
