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

/**
 * A transport over any Node duplex stream (net.Socket, a PassThrough pair,
 * process.stdin/stdout joined by duplexPair...). Replies written within one
 * turn of the event loop are corked into one writev.
 */
export function streamTransport(stream: Duplex): NbdTransport {
  let corked = false;
  let ended = false;
  const uncork = (): void => {
    corked = false;
    stream.uncork();
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
      if (!corked) {
        corked = true;
        stream.cork();
        setImmediate(uncork);
      }
      stream.write(chunk, done);
    },
    pause() {
      stream.pause();
    },
    resume() {
      stream.resume();
    },
    end() {
      if (ended) return;
      ended = true;
      if (corked) uncork();
      stream.end();
    },
    destroy() {
      ended = true;
      stream.destroy();
    },
  };
}
