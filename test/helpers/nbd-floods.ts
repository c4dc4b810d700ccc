// Floods a hostile but fair NBD client can send, and what they cost the
// server process: peak RSS (/proc/PID/status VmHWM), bytes it read (rchar in
// /proc/PID/io) and its child processes. Shared by the flood tests and
// `npm run bench:nbd -- --floods`, which runs them against our server and
// nbdkit alike.
import { readFileSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as P from '../../src/nbd/protocol';
import { connectClient } from './nbd-client';
import { encodeClientFlags, encodeGoOptionData, encodeOption, encodeRequest } from './nbd-encode';

export type FloodTarget = { port: number; host?: string; exportName?: string } | { path: string; exportName?: string };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// --- The server process, seen from /proc ------------------------------------

export class ProcessProbe {
  readonly pid: number;

  constructor(pid: number) {
    this.pid = pid;
  }

  #status(field: string): number {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  }

  /** Resident memory now, in bytes. */
  rss(): number {
    return this.#status('VmRSS');
  }

  /** The highest resident memory since start or resetPeak(), in bytes. */
  peakRss(): number {
    return this.#status('VmHWM');
  }

  /** Starts a new peak from the current RSS ("5" in clear_refs, Linux 4.0+). */
  resetPeak(): void {
    writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
  }

  /** Bytes the process read with read()-like calls (page cache hits included). */
  bytesRead(): number {
    const m = /^rchar:\s+(\d+)/m.exec(readFileSync(`/proc/${this.pid}/io`, 'utf8'));
    return m ? Number(m[1]) : 0;
  }

  /** Direct children now. */
  children(): number[] {
    let out: number[] = [];
    try {
      for (const t of readFileSync(`/proc/${this.pid}/task/${this.pid}/children`, 'utf8').trim().split(/\s+/)) if (t) out.push(Number(t));
    } catch {
      out = [];
    }
    return out;
  }

  /** Waits until RSS has not grown by more than 1 MB for `quietMs` (or `maxMs` passed). */
  async settle(quietMs = 1000, maxMs = 20_000): Promise<void> {
    const end = Date.now() + maxMs;
    const rss = (): number | undefined => {
      try {
        return this.rss();
      } catch {
        return undefined; // gone
      }
    };
    let high = rss() ?? 0;
    let since = Date.now();
    while (Date.now() < end) {
      await sleep(50);
      const now = rss();
      if (now === undefined) return;
      if (now > high + 1e6) {
        high = now;
        since = Date.now();
      } else if (Date.now() - since >= quietMs) return;
    }
  }
}

/** Samples the largest number of children while `during` runs (every millisecond or so). */
export async function maxChildren(probe: ProcessProbe, during: Promise<unknown>): Promise<number> {
  let max = 0;
  let done = false;
  void during.finally(() => (done = true));
  while (!done) {
    max = Math.max(max, probe.children().length);
    await new Promise((r) => setImmediate(r));
  }
  return max;
}

// --- A client that counts replies without keeping them -----------------------

/** Counts complete replies (simple and structured) by their framing, keeping no data. */
export class ReplyCounter {
  replies = 0;
  errors = 0;
  bytes = 0;
  #header = Buffer.alloc(20);
  #have = 0;
  #skip = 0;
  #waiters: Array<() => void> = [];

  feed(chunk: Buffer): void {
    this.bytes += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - off);
        this.#skip -= n;
        off += n;
        continue;
      }
      // The magic first: simple replies are 16 bytes, structured chunk headers 20.
      const need = this.#have < 4 ? 4 : this.#header.readUInt32BE(0) === P.NBD_STRUCTURED_REPLY_MAGIC ? 20 : 16;
      const n = Math.min(need - this.#have, chunk.length - off);
      chunk.copy(this.#header, this.#have, off, off + n);
      this.#have += n;
      off += n;
      if (this.#have < need || need === 4) continue;
      const magic = this.#header.readUInt32BE(0);
      if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
        if (this.#header.readUInt32BE(4) !== 0) this.errors++;
        this.#have = 0;
        this.#count();
      } else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC) {
        const flags = this.#header.readUInt16BE(4);
        const type = this.#header.readUInt16BE(6);
        this.#skip = this.#header.readUInt32BE(16);
        this.#have = 0;
        if (type & 0x8000) this.errors++;
        if (flags & P.NBD_REPLY_FLAG_DONE) this.#count();
      } else {
        throw new Error(`bad reply magic 0x${magic.toString(16)}`);
      }
    }
  }

  #count(): void {
    this.replies++;
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `n` replies have arrived; rejects after `timeoutMs`. */
  async waitFor(n: number, timeoutMs = 60_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.replies < n) {
      if (Date.now() > end) throw new Error(`only ${this.replies} of ${n} replies within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

export interface FloodConnection {
  socket: net.Socket;
  replies: ReplyCounter;
  size: number;
  /** Stop reading replies (they pile up at the server). */
  stopReading(): void;
  /** Writes `data`; resolves when the kernel took it all, or after `timeoutMs` (a server that stopped reading). */
  send(data: Buffer, timeoutMs?: number): Promise<boolean>;
  close(): void;
}

/** A connection past a normal handshake (structured replies, base:allocation, GO). */
export async function floodConnection(target: FloodTarget): Promise<FloodConnection> {
  const { client, socket } = await connectClient(target);
  const { size } = await client.handshake({ name: target.exportName ?? '' });
  socket.removeAllListeners('data');
  const replies = new ReplyCounter();
  socket.on('data', (d: Buffer) => replies.feed(d));
  socket.on('error', () => undefined);
  return {
    socket,
    replies,
    size,
    stopReading() {
      socket.removeAllListeners('data');
      socket.pause();
    },
    send: (data, timeoutMs = 10_000) => writeAll(socket, data, timeoutMs),
    close() {
      socket.destroy();
    },
  };
}

function writeAll(socket: net.Socket, data: Buffer, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    socket.write(data, (err) => {
      clearTimeout(t);
      resolve(!err);
    });
  });
}

let handle = 1;
/** `count` requests of one kind, encoded back to back (one write). */
export function requests(count: number, fields: { type: number; offset?: number | ((i: number) => number); length: number; flags?: number }): Buffer {
  const out = Buffer.allocUnsafe(count * P.NBD_REQUEST_SIZE);
  for (let i = 0; i < count; i++) {
    const offset = typeof fields.offset === 'function' ? fields.offset(i) : (fields.offset ?? 0);
    encodeRequest({ type: fields.type, flags: fields.flags ?? 0, handleHi: 0x464c4f4f, handleLo: handle++ >>> 0, offset, length: fields.length }).copy(out, i * P.NBD_REQUEST_SIZE);
  }
  return out;
}

// --- The floods --------------------------------------------------------------

export interface FloodResult {
  /** What the client managed to send and receive. */
  sent: number;
  replies: number;
  note?: string;
}

export interface FloodOptions {
  /** Runs after the flood, before the connection closes (e.g. wait for the server's memory to settle). */
  hold?: () => Promise<void>;
}

/** BLOCK_STATUS over the whole export, `count` times in one write; replies read or left unread. */
export async function blockStatusFlood(target: FloodTarget, o: { count: number; read: boolean } & FloodOptions): Promise<FloodResult> {
  const c = await floodConnection(target);
  try {
    if (!o.read) c.stopReading();
    const data = requests(o.count, { type: P.NBD_CMD_BLOCK_STATUS, length: Math.min(c.size, 0xffffffff) });
    await c.send(data, o.read ? 60_000 : 5000);
    if (o.read) await c.replies.waitFor(o.count);
    await o.hold?.();
    return { sent: o.count, replies: c.replies.replies };
  } finally {
    c.close();
  }
}

/** `count` reads of `length` bytes in one write, replies read. */
export async function readFlood(target: FloodTarget, o: { count: number; length: number } & FloodOptions): Promise<FloodResult> {
  const c = await floodConnection(target);
  try {
    const span = Math.max(1, Math.floor(c.size / o.length));
    await c.send(requests(o.count, { type: P.NBD_CMD_READ, length: o.length, offset: (i) => (i % span) * o.length }), 60_000);
    await c.replies.waitFor(o.count, 120_000);
    await o.hold?.();
    return { sent: o.count, replies: c.replies.replies };
  } finally {
    c.close();
  }
}

/** `count` NBD_CMD_CACHE of `length` bytes at offset 0 in one write, replies read. */
export async function cacheFlood(target: FloodTarget, o: { count: number; length: number } & FloodOptions): Promise<FloodResult> {
  const c = await floodConnection(target);
  try {
    await c.send(requests(o.count, { type: P.NBD_CMD_CACHE, length: Math.min(o.length, c.size) }), 60_000);
    await c.replies.waitFor(o.count, 120_000);
    await o.hold?.();
    return { sent: o.count, replies: c.replies.replies };
  } finally {
    c.close();
  }
}

/** `count` adjacent NBD_CMD_TRIM of `length` bytes in one write, replies read. */
export async function trimFlood(target: FloodTarget, o: { count: number; length: number } & FloodOptions): Promise<FloodResult> {
  const c = await floodConnection(target);
  try {
    await c.send(requests(o.count, { type: P.NBD_CMD_TRIM, length: o.length, offset: (i) => i * o.length }), 60_000);
    await c.replies.waitFor(o.count, 120_000);
    await o.hold?.();
    return { sent: o.count, replies: c.replies.replies, note: c.replies.errors ? `${c.replies.errors} errors` : undefined };
  } finally {
    c.close();
  }
}

/**
 * Zero-length reads whose replies are never read, sent as fast as the server
 * takes them, up to `count` or until it stops reading for `stallMs`.
 */
export async function zeroReadFlood(target: FloodTarget, o: { count: number; stallMs?: number } & FloodOptions): Promise<FloodResult> {
  const c = await floodConnection(target);
  try {
    c.stopReading();
    const batch = 4096;
    const data = requests(batch, { type: P.NBD_CMD_READ, length: 0 });
    let sent = 0;
    while (sent < o.count) {
      if (!(await c.send(data, o.stallMs ?? 2000))) break;
      sent += batch;
    }
    await o.hold?.();
    return { sent, replies: 0, note: sent < o.count ? 'the server stopped reading' : undefined };
  } finally {
    c.close();
  }
}

/** NBD_OPT_INFO `count` times in the handshake, answers never read. */
export async function optionInfoFlood(target: FloodTarget, o: { count: number; stallMs?: number } & FloodOptions): Promise<FloodResult> {
  const socket = 'path' in target ? net.connect({ path: target.path }) : net.connect({ port: target.port, host: target.host ?? '127.0.0.1' });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  try {
    socket.pause();
    await writeAll(socket, encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES), 5000);
    const one = encodeOption(P.NBD_OPT_INFO, encodeGoOptionData(target.exportName ?? '', []));
    const batch = 2048;
    const data = Buffer.concat(Array.from({ length: batch }, () => one));
    let sent = 0;
    while (sent < o.count) {
      if (!(await writeAll(socket, data, o.stallMs ?? 2000))) break;
      sent += batch;
    }
    await o.hold?.();
    return { sent, replies: 0, note: sent < o.count ? 'the server stopped reading' : undefined };
  } finally {
    socket.destroy();
  }
}

/** A read, NBD_CMD_DISC and then a WRITE of `data` at 0, all in one packet. */
export async function writeAfterDisc(target: FloodTarget, data: Buffer): Promise<void> {
  const c = await floodConnection(target);
  try {
    // The read comes first so that the server is busy when DISC arrives.
    const read = encodeRequest({ type: P.NBD_CMD_READ, flags: 0, handleHi: 0, handleLo: 1, offset: 0, length: 4096 });
    const disc = encodeRequest({ type: P.NBD_CMD_DISC, flags: 0, handleHi: 0, handleLo: 2, offset: 0, length: 0 });
    const write = encodeRequest({ type: P.NBD_CMD_WRITE, flags: P.NBD_CMD_FLAG_FUA, handleHi: 0, handleLo: 3, offset: 0, length: data.length }, data);
    c.socket.write(Buffer.concat([read, disc, write]));
    await new Promise<void>((resolve) => {
      c.socket.on('close', () => resolve());
      setTimeout(resolve, 3000);
    });
  } finally {
    c.close();
  }
}
