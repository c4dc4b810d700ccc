// What an NBD session talks through: TCP, a unix socket, a pipe pair, or an
// in-memory duplex in tests and fuzzers. The session never sees a socket.
import type { Duplex } from 'node:stream';

export interface TransportHandlers {
  /** Bytes from the client. The session may keep references to `chunk`. */
  data(chunk: Buffer): void;
  /** The client went away (or the transport failed); called once. */
  end(error?: Error): void;
}

export interface NbdTransport {
  start(handlers: TransportHandlers): void;
  /** Queue bytes for the client, in order; `done` once handed to the OS (or failed). */
  write(chunk: Buffer, done?: (error?: Error | null) => void): void;
  /** Stop / restart delivering data (backpressure). */
  pause(): void;
  resume(): void;
  /** Send what is queued, then close. */
  end(): void;
  /** Close at once. */
  destroy(): void;
}

/** Replies up to this size are copied into a shared batch buffer; larger ones are written as they are. */
const SMALL_WRITE = 16 * 1024;
const BATCH_SIZE = 256 * 1024;

/**
 * A transport over any Node duplex stream (net.Socket, a PassThrough pair,
 * process.stdin/stdout joined by duplexPair...). Small replies written within
 * one turn of the event loop are copied into one buffer and sent with one
 * write (a 4 KiB read reply costs a copy of 4 KiB, far less than a stream
 * write of its own); large ones go out as they are, without a copy.
 */
export function streamTransport(stream: Duplex): NbdTransport {
  let ended = false;
  let batch: Buffer | null = null;
  let batchLen = 0;
  let batchDone: Array<(error?: Error | null) => void> = [];
  let scheduled = false;
  const spare: Buffer[] = [];

  const flush = (): void => {
    if (batchLen === 0 || !batch) return;
    const buf = batch;
    const dones = batchDone;
    const data = buf.subarray(0, batchLen);
    batch = null;
    batchLen = 0;
    batchDone = [];
    stream.write(data, (err) => {
      if (spare.length < 4) spare.push(buf);
      for (const d of dones) d(err);
    });
  };
  const onImmediate = (): void => {
    scheduled = false;
    flush();
  };
  return {
    start(handlers) {
      let finished = false;
      const finish = (error?: Error): void => {
        if (finished) return;
        finished = true;
        handlers.end(error);
      };
      stream.on('data', (chunk: Buffer) => handlers.data(chunk));
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
      if (batch && batchLen + chunk.length > batch.length) flush();
      if (!batch) batch = spare.pop() ?? Buffer.allocUnsafe(BATCH_SIZE);
      chunk.copy(batch, batchLen);
      batchLen += chunk.length;
      if (done) batchDone.push(done);
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
      stream.destroy();
    },
  };
}
