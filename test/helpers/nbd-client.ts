// A small NBD client for tests: speaks the protocol byte by byte so tests can
// also send what real clients never would (bad magic, huge lengths, unknown
// options). Works over a TCP/unix socket or an in-memory transport.
import * as net from 'node:net';
import type { NbdRequest } from '../../src/nbd/codec';
import * as P from '../../src/nbd/protocol';
import type { NbdTransport, TransportHandlers } from '../../src/nbd/transport';
import { encodeClientFlags, encodeGoOptionData, encodeMetaContextOptionData, encodeOption, encodeRequest } from './nbd-encode';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface StructuredChunk {
  flags: number;
  type: number;
  payload: Buffer;
}

export interface Reply {
  /** 0 on success. */
  error: number;
  /** Read data (simple replies and OFFSET_DATA chunks, assembled). */
  data?: Buffer;
  /** Structured chunks as received. */
  chunks: StructuredChunk[];
  structured: boolean;
  /** Error message of a structured error chunk. */
  message?: string;
}

interface Pending {
  req: NbdRequest;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  chunks: StructuredChunk[];
}

type Mode = 'greeting' | 'options' | 'export-name' | 'transmission';

export class NbdTestClient {
  #buf: Buffer = Buffer.alloc(0);
  #mode: Mode = 'greeting';
  #waiters: Array<() => void> = [];
  #greeting: number | undefined;
  #optionReplies: OptionReply[] = [];
  #exportNameReply: Buffer | undefined;
  #noZeroes = false;
  #pending = new Map<string, Pending>();
  #nextHandle = 1;
  structured = false;
  closed = false;
  closeWaiters: Array<() => void> = [];
  readonly #send: (b: Buffer) => void;
  #batch: Buffer[] | undefined;

  constructor(send: (b: Buffer) => void) {
    this.#send = send;
  }

  send(b: Buffer): void {
    if (this.#batch) this.#batch.push(b);
    else this.#send(b);
  }

  /** Everything `f` sends goes out as one chunk (as in one TCP packet). */
  batch<T>(f: () => T): T {
    this.#batch = [];
    try {
      return f();
    } finally {
      const parts = this.#batch;
      this.#batch = undefined;
      this.#send(Buffer.concat(parts));
    }
  }

  // --- transport side ---
  feed(chunk: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    this.#parse();
    const w = this.#waiters;
    this.#waiters = [];
    w.forEach((f) => f());
  }

  end(): void {
    this.closed = true;
    for (const p of this.#pending.values()) p.reject(new Error(`connection closed before the reply to ${P.commandName(p.req.type)}`));
    this.#pending.clear();
    const w = [...this.#waiters, ...this.closeWaiters];
    this.#waiters = [];
    this.closeWaiters = [];
    w.forEach((f) => f());
  }

  waitClosed(timeoutMs = 5000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('server did not close the connection')), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async #until<T>(get: () => T | undefined, what: string, timeoutMs = 10000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = get();
      if (v !== undefined) return v;
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  #parse(): void {
    for (;;) {
      const b = this.#buf;
      if (this.#mode === 'greeting') {
        if (b.length < 18) return;
        if (b.readBigUInt64BE(0) !== P.NBDMAGIC || b.readBigUInt64BE(8) !== P.IHAVEOPT) throw new Error('bad greeting');
        this.#greeting = b.readUInt16BE(16);
        this.#buf = b.subarray(18);
        this.#mode = 'options';
      } else if (this.#mode === 'options') {
        if (b.length < 20) return;
        if (b.readBigUInt64BE(0) !== P.NBD_REP_MAGIC) throw new Error(`bad option reply magic ${b.subarray(0, 8).toString('hex')}`);
        const len = b.readUInt32BE(16);
        if (b.length < 20 + len) return;
        const reply = { option: b.readUInt32BE(8), type: b.readUInt32BE(12), data: Buffer.from(b.subarray(20, 20 + len)) };
        this.#optionReplies.push(reply);
        this.#buf = b.subarray(20 + len);
        if (reply.option === P.NBD_OPT_GO && reply.type === P.NBD_REP_ACK) this.#mode = 'transmission';
      } else if (this.#mode === 'export-name') {
        const n = this.#noZeroes ? 10 : 134;
        if (b.length < n) return;
        this.#exportNameReply = Buffer.from(b.subarray(0, n));
        this.#buf = b.subarray(n);
        this.#mode = 'transmission';
      } else {
        if (b.length < 4) return;
        const magic = b.readUInt32BE(0);
        if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
          if (b.length < 16) return;
          const error = b.readUInt32BE(4);
          const key = `${b.readUInt32BE(8)}:${b.readUInt32BE(12)}`;
          const p = this.#pending.get(key);
          if (!p) throw new Error(`reply for unknown handle ${key}`);
          const dataLen = p.req.type === P.NBD_CMD_READ && error === 0 ? p.req.length : 0;
          if (b.length < 16 + dataLen) return;
          const reply: Reply = { error, chunks: [], structured: false };
          if (p.req.type === P.NBD_CMD_READ && error === 0) reply.data = Buffer.from(b.subarray(16, 16 + dataLen));
          this.#buf = b.subarray(16 + dataLen);
          this.#pending.delete(key);
          p.resolve(reply);
        } else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC) {
          if (b.length < 20) return;
          const len = b.readUInt32BE(16);
          if (b.length < 20 + len) return;
          const flags = b.readUInt16BE(4);
          const type = b.readUInt16BE(6);
          const key = `${b.readUInt32BE(8)}:${b.readUInt32BE(12)}`;
          const p = this.#pending.get(key);
          if (!p) throw new Error(`structured reply for unknown handle ${key}`);
          p.chunks.push({ flags, type, payload: Buffer.from(b.subarray(20, 20 + len)) });
          this.#buf = b.subarray(20 + len);
          if (flags & P.NBD_REPLY_FLAG_DONE) {
            this.#pending.delete(key);
            p.resolve(assemble(p.req, p.chunks));
          }
        } else {
          throw new Error(`bad reply magic 0x${magic.toString(16)}`);
        }
      }
    }
  }

  // --- handshake ---
  async greeting(): Promise<number> {
    return this.#until(() => this.#greeting, 'greeting');
  }

  sendClientFlags(flags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES): void {
    this.#noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
    this.send(encodeClientFlags(flags));
  }

  /** Sends an option and collects replies up to the final one (ACK or error). */
  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.send(encodeOption(option, data));
    return this.optionReplies();
  }

  async optionReplies(): Promise<OptionReply[]> {
    return this.#until(() => {
      const i = this.#optionReplies.findIndex((r) => r.type === P.NBD_REP_ACK || r.type >= 0x80000000);
      if (i < 0) return undefined;
      return this.#optionReplies.splice(0, i + 1);
    }, 'option reply');
  }

  async exportName(name: string): Promise<{ size: number; flags: number }> {
    this.#mode = 'export-name';
    this.send(encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from(name)));
    const r = await this.#until(() => this.#exportNameReply, 'export name reply');
    return { size: Number(r.readBigUInt64BE(0)), flags: r.readUInt16BE(8) };
  }

  /** The usual modern handshake: structured replies, base:allocation, GO. */
  async handshake(options: { name?: string; structured?: boolean; meta?: boolean } = {}): Promise<{ size: number; flags: number }> {
    const name = options.name ?? '';
    await this.greeting();
    this.sendClientFlags();
    if (options.structured ?? true) {
      const r = await this.option(P.NBD_OPT_STRUCTURED_REPLY);
      if (r.at(-1)!.type !== P.NBD_REP_ACK) throw new Error('structured replies refused');
      this.structured = true;
      if (options.meta ?? true) {
        const m = await this.option(P.NBD_OPT_SET_META_CONTEXT, encodeMetaContextOptionData(name, [P.BASE_ALLOCATION]));
        if (m.at(-1)!.type !== P.NBD_REP_ACK) throw new Error('meta context refused');
      }
    }
    const replies = await this.option(P.NBD_OPT_GO, encodeGoOptionData(name, [P.NBD_INFO_BLOCK_SIZE]));
    const last = replies.at(-1)!;
    if (last.type !== P.NBD_REP_ACK) throw new Error(`NBD_OPT_GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT)!;
    return { size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10) };
  }

  // --- transmission ---
  request(fields: Partial<NbdRequest> & { type: number }, payload?: Uint8Array, options: { declaredLength?: number } = {}): Promise<Reply> {
    const h = this.#nextHandle++;
    const req: NbdRequest = {
      flags: fields.flags ?? 0,
      type: fields.type,
      handleHi: fields.handleHi ?? 0x5354_4600,
      handleLo: fields.handleLo ?? h,
      offset: fields.offset ?? 0,
      length: options.declaredLength ?? fields.length ?? payload?.length ?? 0,
    };
    if (this.closed) return Promise.reject(new Error('connection closed'));
    const p = new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply to ${P.commandName(req.type)} (handle ${h}) within 30 s`)), 30_000);
      this.#pending.set(`${req.handleHi}:${req.handleLo}`, {
        req,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
        chunks: [],
      });
    });
    const header = encodeRequest(req);
    this.send(payload ? Buffer.concat([header, payload]) : header);
    return p;
  }

  read(offset: number, length: number, flags = 0): Promise<Reply> {
    return this.request({ type: P.NBD_CMD_READ, offset, length, flags });
  }

  write(offset: number, data: Uint8Array, flags = 0): Promise<Reply> {
    return this.request({ type: P.NBD_CMD_WRITE, offset, flags }, data);
  }

  flush(): Promise<Reply> {
    return this.request({ type: P.NBD_CMD_FLUSH });
  }

  disconnect(): void {
    this.send(encodeRequest({ flags: 0, type: P.NBD_CMD_DISC, handleHi: 0, handleLo: 0, offset: 0, length: 0 }));
  }

  get pendingCount(): number {
    return this.#pending.size;
  }
}

function assemble(req: NbdRequest, chunks: StructuredChunk[]): Reply {
  const reply: Reply = { error: 0, chunks, structured: true };
  for (const c of chunks) {
    if (c.type & 0x8000) {
      reply.error = c.payload.readUInt32BE(0);
      const mlen = c.payload.readUInt16BE(4);
      reply.message = c.payload.subarray(6, 6 + mlen).toString();
    }
  }
  if (req.type === P.NBD_CMD_READ && reply.error === 0) {
    const data = Buffer.alloc(req.length);
    for (const c of chunks) {
      if (c.type === P.NBD_REPLY_TYPE_OFFSET_DATA) {
        const off = Number(c.payload.readBigUInt64BE(0)) - req.offset;
        c.payload.copy(data, off, 8);
      }
    }
    reply.data = data;
  }
  return reply;
}

/** Decodes an NBD_REPLY_TYPE_BLOCK_STATUS chunk into [length, flags] pairs. */
export function blockStatusExtents(reply: Reply): Array<[number, number]> {
  const c = reply.chunks.find((x) => x.type === P.NBD_REPLY_TYPE_BLOCK_STATUS);
  if (!c) throw new Error(`no block status chunk (error ${reply.error} ${reply.message ?? ''})`);
  const out: Array<[number, number]> = [];
  for (let o = 4; o < c.payload.length; o += 8) out.push([c.payload.readUInt32BE(o), c.payload.readUInt32BE(o + 4)]);
  return out;
}

/** A client over a real socket (TCP or unix). */
export async function connectClient(where: { port: number; host?: string; localAddress?: string } | { path: string }): Promise<{ client: NbdTestClient; socket: net.Socket }> {
  const socket = 'path' in where ? net.connect({ path: where.path }) : net.connect({ port: where.port, host: where.host ?? '127.0.0.1', ...(where.localAddress ? { localAddress: where.localAddress } : {}) });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const client = new NbdTestClient((b) => {
    if (!socket.destroyed) socket.write(b);
  });
  socket.on('data', (d: Buffer) => client.feed(d));
  socket.on('close', () => client.end());
  socket.on('error', () => client.end());
  return { client, socket };
}

/**
 * An in-memory NbdTransport with the test on the other end: no socket, no
 * timing, so fuzzers can drive a session fast and deterministically.
 */
export class MemoryTransport implements NbdTransport {
  handlers: TransportHandlers | undefined;
  paused = false;
  ended = false;
  destroyed = false;
  /** Everything the server wrote. */
  written: Buffer[] = [];
  writtenBytes = 0;
  /**
   * A client that reads nothing: output stays with the transport (small
   * replies counted as buffered, large ones not done) until `unstall()`.
   */
  stalled = false;
  #stalledOutput: Array<() => void> = [];
  #endWhenUnstalled = false;
  #inbox: Buffer[] = [];
  #sink: ((b: Buffer) => void) | undefined;

  /** Deliver server output to `sink` (e.g. a NbdTestClient's feed). */
  connect(sink: (b: Buffer) => void): void {
    this.#sink = sink;
  }

  start(handlers: TransportHandlers): void {
    this.handlers = handlers;
  }

  write(chunk: Buffer, done?: (error?: Error | null) => void): void {
    if (this.ended || this.destroyed) {
      queueMicrotask(() => done?.(new Error('closed')));
      return;
    }
    const copy = Buffer.from(chunk);
    this.written.push(copy);
    this.writtenBytes += copy.length;
    if (this.stalled) {
      // As the stream transport does: small replies are copied (and reported
      // as held), large ones are held by the caller until sent.
      const small = copy.length <= 16 * 1024;
      if (small) {
        this.handlers?.buffered?.(copy.length);
        done?.(null);
      }
      this.#stalledOutput.push(() => {
        this.#sink?.(copy);
        if (small) this.handlers?.buffered?.(-copy.length);
        else done?.(null);
      });
      return;
    }
    queueMicrotask(() => {
      this.#sink?.(copy);
      done?.(null);
    });
  }

  /** The client starts reading again: everything held is delivered. */
  unstall(): void {
    this.stalled = false;
    const held = this.#stalledOutput;
    this.#stalledOutput = [];
    for (const f of held) f();
    if (this.#endWhenUnstalled) setImmediate(() => this.handlers?.end());
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    // As a socket does: what arrived while paused is delivered now.
    while (!this.paused && this.#inbox.length > 0 && !this.ended && !this.destroyed) this.handlers?.data(this.#inbox.shift()!);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    // As a socket does: what is queued goes out before the end (for a stalled reader, once it reads).
    if (this.stalled) this.#endWhenUnstalled = true;
    else setImmediate(() => this.handlers?.end());
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    setImmediate(() => this.handlers?.end());
  }

  /** Bytes from the "client"; while the server has paused reading they wait, as in a socket buffer. */
  push(chunk: Buffer): void {
    if (this.ended || this.destroyed) return;
    if (this.paused || this.#inbox.length > 0) this.#inbox.push(chunk);
    else this.handlers?.data(chunk);
  }

  /** Bytes pushed that the server has not taken yet. */
  get unreadBytes(): number {
    return this.#inbox.reduce((n, c) => n + c.length, 0);
  }

  /** The "client" hangs up. */
  hangUp(): void {
    if (this.ended || this.destroyed) return;
    this.ended = true;
    this.handlers?.end();
  }
}
