// What an NBD session talks through: TCP, a unix socket, a pipe pair, or an
// in-memory duplex in tests and fuzzers. The session never sees a socket.
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { BufferPool } from './buffer-pool';

export interface TransportHandlers {
  /** Bytes from the client. The session may keep references to `chunk`. */
  data(chunk: Buffer): void;
  /** The client went away (or the transport failed); called once. */
  end(error?: Error): void;
  /**
   * The transport now holds `delta` more bytes of its own (negative: fewer):
   * replies it copied and has not yet handed to the OS. They count in the
   * connection's memory budget like everything else.
   */
  buffered(delta: number): void;
  /**
   * Whether the handler still holds a reference to a chunk it was given.
   * When it says no, a transport may reuse the chunks' memory for the next
   * read; left out, it never does.
   */
  holding?(): boolean;
  /**
   * A buffer the next received bytes may be read into directly instead of
   * being handed over in `data` (a write's payload, saving its copy), if it
   * takes at least `minimum` bytes; then `filledDirect` says how many came.
   */
  directTarget?(minimum: number): Buffer | undefined;
  filledDirect?(n: number): void;
  /** Whether the client's last write carried at least `minimum` bytes of data (reads are then kept short). */
  writesLarge?(minimum: number): boolean;
}

export interface NbdTransport {
  start(handlers: TransportHandlers): void;
  /**
   * Queue bytes for the client, in order. `done` once the transport no longer
   * needs `chunk`: at once when it was copied, else when handed to the OS (or
   * failed); until then the caller accounts for it.
   */
  write(chunk: Buffer, done?: (error?: Error | null) => void): void;
  /** Stop / restart delivering data (backpressure). */
  pause(): void;
  resume(): void;
  /** Send what is queued, then close. */
  end(): void;
  /** Close at once. */
  destroy(): void;
}

/** Replies up to this size are copied into a batch buffer; larger ones are written as they are. */
const SMALL_WRITE = 16 * 1024;
/** A turn's replies start in a small batch buffer of the connection's own (most turns need no more)... */
const SMALL_BATCH = 4 * 1024;
/** ...and move to a large one from the pool when they outgrow it. */
const BATCH_SIZE = 256 * 1024;
/** Small batch buffers per connection: one being filled while the other is with the OS. */
const SMALL_BUFFERS = 2;

export interface StreamTransportOptions {
  /** Where large batch buffers come from and go back to (shared by a server's connections). */
  pool?: BufferPool;
  /**
   * The stream delivers no 'data' events but hands its received chunks to
   * the function this is given (a socket reading through `onread`).
   */
  reads?: (handlers: TransportHandlers) => void;
}

/**
 * A transport over any Node duplex stream (net.Socket, a PassThrough pair,
 * process.stdin/stdout joined by duplexPair...). Small replies written within
 * one turn of the event loop are copied into one buffer and sent with one
 * write (a 4 KiB read reply costs a copy of 4 KiB, far less than a stream
 * write of its own); large ones go out as they are, without a copy. Batch
 * buffers waiting for the OS are reported through `buffered`, whole: a few
 * bytes in a 256 KiB buffer hold 256 KiB. So the replies of a quiet turn (a
 * write's acknowledgement) go in one of two 4 KiB buffers the connection
 * reuses, and only a turn with more takes a large buffer from the pool.
 */
export function streamTransport(stream: Duplex, options: StreamTransportOptions = {}): NbdTransport {
  const pool = options.pool;
  let handlers: TransportHandlers | undefined;
  let ended = false;
  let batch: Buffer | null = null;
  let batchLen = 0;
  let batchIsSmall = false;
  let scheduled = false;
  const freeSmall: Buffer[] = [];
  let smallMade = 0;

  const takeSmall = (): Buffer | undefined => {
    if (freeSmall.length > 0) return freeSmall.pop();
    if (smallMade >= SMALL_BUFFERS) return undefined;
    smallMade++;
    return Buffer.allocUnsafe(SMALL_BATCH);
  };
  const takeLarge = (): Buffer => (pool ? pool.take(BATCH_SIZE) : Buffer.allocUnsafe(BATCH_SIZE));
  /** A batch for a turn whose first reply is `first` bytes: small when that fits. */
  const startBatch = (first: number): void => {
    const small = first <= SMALL_BATCH ? takeSmall() : undefined;
    batchIsSmall = small !== undefined;
    batch = small ?? takeLarge();
  };
  /** The turn's replies outgrew the small buffer: move them to a large one. */
  const grow = (): void => {
    const large = takeLarge();
    batch!.copy(large, 0, 0, batchLen);
    freeSmall.push(batch!);
    batch = large;
    batchIsSmall = false;
  };
  const flush = (): void => {
    if (batchLen === 0 || !batch) return;
    const buf = batch;
    const small = batchIsSmall;
    const len = batchLen;
    batch = null;
    batchLen = 0;
    handlers?.buffered(buf.length);
    stream.write(buf.subarray(0, len), () => {
      handlers?.buffered(-buf.length);
      if (small) freeSmall.push(buf);
      else pool?.give(buf);
    });
  };
  const onImmediate = (): void => {
    scheduled = false;
    flush();
  };
  return {
    start(h) {
      handlers = h;
      let finished = false;
      const finish = (error?: Error): void => {
        if (finished) return;
        finished = true;
        h.end(error);
      };
      if (options.reads) {
        options.reads(h);
        stream.resume();
      } else stream.on('data', (chunk: Buffer) => h.data(chunk));
      stream.on('end', () => finish());
      stream.on('close', () => finish());
      stream.on('error', (err) => finish(err));
    },
    write(chunk, done) {
      if (ended || stream.destroyed || !stream.writable) {
        if (done) queueMicrotask(() => done(new Error('transport closed')));
        return;
      }
      if (chunk.length > SMALL_WRITE) {
        flush();
        stream.write(chunk, done);
        return;
      }
      if (batch && batchLen + chunk.length > batch.length) {
        if (batchIsSmall) grow();
        else flush();
      }
      if (!batch) startBatch(chunk.length);
      chunk.copy(batch!, batchLen);
      batchLen += chunk.length;
      done?.(null);
      if (!scheduled) {
        scheduled = true;
        setImmediate(onImmediate);
      }
    },
    pause() {
      stream.pause();
    },
    resume() {
      stream.resume();
    },
    end() {
      if (ended) return;
      flush();
      ended = true;
      stream.end();
    },
    destroy() {
      ended = true;
      if (batch && !batchIsSmall) pool?.give(batch);
      batch = null;
      batchLen = 0;
      stream.destroy();
    },
  };
}

/** Received bytes land one after the other in slabs of this size... */
export const SLAB_SIZE = 1024 * 1024;
/** ...and a fresh slab is taken when less than one read of Node's (64 KiB) is left. */
const MIN_READ = 64 * 1024;
/** A write's data is read straight into its own buffer when this much or more of it is still to come. */
const DIRECT_MIN = 64 * 1024;

/**
 * A transport over a socket a net.Server accepted (TCP or unix, created with
 * pauseOnConnect), whose reads land in slabs of the connection's own instead
 * of a fresh 64 KiB buffer and a stream 'data' event per read.
 *
 * Why, measured (BENCHMARKS.md): receiving 1 GiB over loopback through 'data'
 * events costs Node 20 about 0.43 CPU s, through a read buffer of the
 * socket's own (`onread`) 0.16 s. Node offers `onread` only when it creates
 * the socket, so the accepted socket's handle is taken over by a new
 * net.Socket made with it (and the server's count of connections moves with
 * it): the seam is here and nowhere else, and tested (nbd-transport and the
 * interop tests run every real client through it).
 *
 * A chunk is a view of a slab, never overwritten while the handler holds
 * it: the slab is reused from its start only when the handler says it holds
 * no chunk (`holding`), and otherwise the next read goes behind the last
 * chunk or into a new slab, the old one freed with its last view. The
 * session keeps no chunk for long (write data is copied into pool buffers,
 * see client-stream-parser.ts; unparsed bytes wait at most a microtask turn
 * or a pause for the memory budget), so a connection holds about one slab.
 */
export function acceptedSocketTransport(accepted: Socket, options: Omit<StreamTransportOptions, 'reads'> = {}): NbdTransport {
  const internals = accepted as unknown as { _handle: unknown; _server: unknown; server: unknown };
  const handle = internals._handle;
  if (!handle || accepted.readableFlowing !== false) return streamTransport(accepted, options);
  let slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
  let used = 0;
  let handlers: TransportHandlers | undefined;
  /** The next read goes into the handler's buffer, not the slab. */
  let direct = false;
  const socket = new Socket({
    handle,
    pauseOnCreate: true,
    allowHalfOpen: false,
    readable: true,
    writable: true,
    onread: {
      // Asked for the next read's memory right after each chunk was handed over.
      buffer: () => {
        const target = handlers?.directTarget?.(DIRECT_MIN);
        direct = target !== undefined;
        if (target) return target;
        // Nothing handed over is held any more: the slab is free again (no allocation, nothing for the GC).
        if (!(handlers?.holding?.() ?? true)) used = 0;
        else if (SLAB_SIZE - used < MIN_READ) {
          slab = Buffer.allocUnsafeSlow(SLAB_SIZE);
          used = 0;
        }
        // While the client sends large writes, a read into the slab takes
        // little more than the next header, so that the rest of the data
        // is read straight into its buffer; else as much as has come.
        const most = handlers?.writesLarge?.(DIRECT_MIN) ? MIN_READ : SLAB_SIZE;
        return slab.subarray(used, used + most);
      },
      callback: (n: number, buf: Uint8Array) => {
        if (direct) {
          direct = false;
          handlers?.filledDirect?.(n);
          return true;
        }
        used += n;
        handlers?.data(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true;
      },
    },
  } as ConstructorParameters<typeof Socket>[0]);
  // The server counts its connections down when a socket of its own closes.
  const adopted = socket as unknown as typeof internals;
  adopted._server = internals._server;
  adopted.server = internals.server;
  internals._server = null;
  internals.server = null;
  internals._handle = null;
  // Whoever watches the accepted socket for its end sees it: in a worker
  // process, Node's channel tells the main process's server that the socket
  // it handed over is closed (its close() waits for that).
  socket.once('close', () => accepted.destroy());
  return streamTransport(socket, {
    ...options,
    reads: (h) => {
      handlers = h;
    },
  });
}
