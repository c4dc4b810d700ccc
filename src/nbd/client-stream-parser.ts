// Incremental parser of the client's byte stream: the client flags, then
// options, then (once the session says so) requests with their write
// payloads. Pure: messages arrive split across chunks in any way and the
// parser copes; the session decides what each message means.
//
// The handler may pause the parser from inside any callback: the parser then
// stops right after that message, keeps the unread rest of the chunk, and
// goes on at resume(). That is how the session checks its memory budget per
// request (not per received chunk) and how nothing after NBD_CMD_DISC is
// ever looked at.
import { decodeRequestHeader, type NbdRequest } from './codec';
import { IHAVEOPT, NBD_CMD_WRITE, NBD_OPTION_HEADER_SIZE, NBD_REQUEST_SIZE } from './protocol';

export interface ClientStreamHandler {
  /** The 32 client flags that follow the greeting. */
  clientFlags(flags: number): void;
  /** One option with its data (at most `maxOptionData` bytes). */
  option(option: number, data: Buffer): void;
  /** An option whose data was longer than `maxOptionData`: the data was skipped. */
  optionTooBig(option: number, length: number): void;
  /**
   * The header of an NBD_CMD_WRITE whose `length` bytes of data follow and
   * will be kept (it is at most `maxPayload`): called before they are read,
   * so that they can be counted (and reading paused) first.
   */
  payloadStart(length: number): void;
  /**
   * A request. For NBD_CMD_WRITE `payload` holds the data, copied out of the
   * received chunks into one buffer from `allocatePayload` (so that no
   * received chunk is kept: a transport may reuse or share their memory), or
   * is null when the length exceeded `maxPayload`: then the request comes at
   * once and its data is skipped as it streams in, without being stored.
   */
  request(request: NbdRequest, payload: readonly Buffer[] | null): void;
  /** The stream cannot be understood any more (wrong magic): the session must end. */
  protocolError(message: string): void;
}

export interface ClientParserOptions {
  maxOptionData: number;
  maxPayload: number;
  /**
   * Where a write's data goes, `length` bytes exactly: taken once its first
   * byte arrives (after payloadStart); the request's handler owns it.
   * Buffer.allocUnsafe when left out.
   */
  allocatePayload?: (length: number) => Buffer;
}

const enum Phase {
  ClientFlags,
  OptionHeader,
  OptionData,
  RequestHeader,
  Payload,
  Dead,
}

const EMPTY = Buffer.alloc(0);
const NO_PAYLOAD: readonly Buffer[] = [];

/**
 * Splits the client's byte stream into messages. The phase changes from
 * options to requests only when the session says so (`startTransmission`),
 * from inside its handler for the option that ended the handshake: the
 * client may send its first requests in the same chunk.
 */
export class ClientStreamParser {
  #phase = Phase.ClientFlags;
  readonly #header = Buffer.alloc(NBD_REQUEST_SIZE);
  #headerHave = 0;
  #need = 4;
  // Option data / write payload being collected.
  #option = 0;
  #request: NbdRequest | null = null;
  #payload: Buffer | null = null;
  #collected: Buffer | null = null;
  readonly #allocate: (length: number) => Buffer;
  #remaining = 0;
  #tooBigLength = 0;
  // Received bytes not parsed yet (while paused): chunks, and how far into the first.
  readonly #pending: Buffer[] = [];
  #pendingOff = 0;
  #paused = false;
  #consuming = false;
  /** A payload read directly was completed while paused. */
  #directDone = false;
  #lastWriteLength = 0;
  readonly #handler: ClientStreamHandler;
  readonly #options: ClientParserOptions;

  constructor(options: ClientParserOptions, handler: ClientStreamHandler) {
    this.#options = options;
    this.#handler = handler;
    this.#allocate = options.allocatePayload ?? ((length) => Buffer.allocUnsafe(length));
  }

  get dead(): boolean {
    return this.#phase === Phase.Dead;
  }

  get paused(): boolean {
    return this.#paused;
  }

  /** Whether a received chunk is still referenced (bytes of it wait to be parsed). */
  get holdsInput(): boolean {
    return this.#pending.length > 0;
  }

  /** Received bytes waiting to be parsed. */
  get pendingBytes(): number {
    let n = 0;
    for (const c of this.#pending) n += c.length;
    return n - this.#pendingOff;
  }

  /** Switch to transmission: the next bytes are requests. */
  startTransmission(): void {
    if (this.#phase === Phase.Dead) return;
    this.#phase = Phase.RequestHeader;
    this.#need = NBD_REQUEST_SIZE;
    this.#headerHave = 0;
  }

  /** Stop parsing for good: everything after this is ignored and dropped. */
  stop(): void {
    this.#phase = Phase.Dead;
    this.#directDone = false;
    this.#pending.length = 0;
    this.#pendingOff = 0;
  }

  /** Stop after the current message; the rest waits for resume(). */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#directDone) {
      this.#directDone = false;
      this.#finishData();
      if (this.#paused) return;
    }
    // Called from inside a handler, the running loop simply goes on.
    if (!this.#consuming) this.#drain();
  }

  /**
   * Where the next received bytes may be read to directly, saving their
   * copy: the unfilled rest of a write's payload, when the parser waits
   * for exactly those bytes (nothing else received, not paused) and at
   * least `minimum` of them. After a read into it, `filledDirect(n)`.
   */
  directTarget(minimum: number): Buffer | undefined {
    if (this.#phase !== Phase.Payload || this.#paused || this.#pending.length > 0 || !this.#request || this.#remaining < minimum) return undefined;
    this.#payload ??= this.#allocate(this.#request.length);
    return this.#payload.subarray(this.#payload.length - this.#remaining);
  }

  /** The length of the last write request's data (0 before any). */
  get lastWriteLength(): number {
    return this.#lastWriteLength;
  }

  /** `n` bytes were read into the buffer directTarget() gave. */
  filledDirect(n: number): void {
    if (this.#phase !== Phase.Payload) return;
    this.#remaining -= n;
    if (this.#remaining > 0) return;
    // Paused meanwhile: the request is delivered at resume(), as any message would be.
    if (this.#paused) this.#directDone = true;
    else this.#finishData();
  }

  push(chunk: Buffer): void {
    if (this.#phase === Phase.Dead || chunk.length === 0) return;
    this.#pending.push(chunk);
    if (!this.#paused && !this.#consuming) this.#drain();
  }

  #drain(): void {
    this.#consuming = true;
    try {
      const pending = this.#pending;
      while (!this.#paused && pending.length > 0) {
        const chunk = pending[0]!;
        const off = this.#consume(chunk, this.#pendingOff);
        if (this.#phase === Phase.Dead) return this.stop();
        if (off < chunk.length) this.#pendingOff = off;
        else {
          pending.shift();
          this.#pendingOff = 0;
        }
      }
    } finally {
      this.#consuming = false;
    }
  }

  /** Parses `chunk` from `off` until its end or a pause; returns where it stopped. */
  #consume(chunk: Buffer, off: number): number {
    const len = chunk.length;
    while (off < len) {
      const phase = this.#phase;
      if (phase === Phase.Dead) return len;
      if (phase === Phase.OptionData || phase === Phase.Payload) {
        const n = Math.min(this.#remaining, len - off);
        const into = phase === Phase.Payload ? this.#request && (this.#payload ??= this.#allocate(this.#request.length)) : this.#collected;
        if (into) chunk.copy(into, into.length - this.#remaining, off, off + n);
        off += n;
        this.#remaining -= n;
        if (this.#remaining === 0) this.#finishData();
      } else {
        // A fixed-size header: parse in place when the chunk holds it whole.
        const need = this.#need;
        if (this.#headerHave === 0 && len - off >= need) {
          off += need;
          this.#onHeader(chunk, off - need);
        } else {
          const n = Math.min(need - this.#headerHave, len - off);
          chunk.copy(this.#header, this.#headerHave, off, off + n);
          this.#headerHave += n;
          off += n;
          if (this.#headerHave < need) return off;
          this.#headerHave = 0;
          this.#onHeader(this.#header, 0);
        }
      }
      if (this.#paused) return off;
    }
    return off;
  }

  #onHeader(b: Buffer, o: number): void {
    const h = this.#handler;
    switch (this.#phase) {
      case Phase.ClientFlags:
        this.#phase = Phase.OptionHeader;
        this.#need = NBD_OPTION_HEADER_SIZE;
        h.clientFlags(b.readUInt32BE(o));
        return;
      case Phase.OptionHeader: {
        if (b.readBigUInt64BE(o) !== IHAVEOPT) return this.#fail('option does not start with IHAVEOPT');
        const option = b.readUInt32BE(o + 8);
        const length = b.readUInt32BE(o + 12);
        this.#option = option;
        if (length === 0) return h.option(option, EMPTY);
        this.#phase = Phase.OptionData;
        this.#remaining = length;
        if (length > this.#options.maxOptionData) {
          // Skipped as it streams in, reported once skipped.
          this.#collected = null;
          this.#tooBigLength = length;
        } else {
          this.#collected = Buffer.allocUnsafe(length);
          this.#tooBigLength = 0;
        }
        return;
      }
      case Phase.RequestHeader: {
        const request = decodeRequestHeader(b, o);
        if (!request) return this.#fail('request does not start with NBD_REQUEST_MAGIC');
        if (request.type !== NBD_CMD_WRITE) return h.request(request, null);
        if (request.length === 0) return h.request(request, NO_PAYLOAD);
        this.#phase = Phase.Payload;
        this.#remaining = request.length;
        this.#lastWriteLength = request.length;
        this.#collected = null;
        this.#payload = null;
        if (request.length <= this.#options.maxPayload) {
          this.#request = request;
          h.payloadStart(request.length);
        } else {
          // Too large to hold: report it now (the session replies at
          // once) and skip the data as it streams in, storing none of it.
          this.#request = null;
          h.request(request, null);
        }
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
      if (data) this.#handler.option(this.#option, data);
      else this.#handler.optionTooBig(this.#option, this.#tooBigLength);
      return;
    }
    // Payload
    this.#phase = Phase.RequestHeader;
    this.#need = NBD_REQUEST_SIZE;
    const request = this.#request;
    const payload = this.#payload;
    this.#request = null;
    this.#payload = null;
    if (request) this.#handler.request(request, payload ? [payload] : NO_PAYLOAD);
  }

  #fail(message: string): void {
    this.stop();
    this.#handler.protocolError(message);
  }
}
