// What an NBD session talks through: TCP, a unix socket, a pipe pair, or an
// in-memory duplex in tests and fuzzers. The session never sees a socket.
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
      stream.on('data', (chunk: Buffer) => h.data(chunk));
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
