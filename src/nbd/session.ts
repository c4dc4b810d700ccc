// One client connection: the handshake (handshake.ts), then the transmission
// phase (transmission.ts), over an NbdTransport. The session owns the
// transport and the parser of the client's bytes; bytes held for a
// connection are bounded, and reading from the client pauses while the
// bound is exceeded.
import type { Logger } from '../log';
import type { BufferPool } from './buffer-pool';
import { encodeGreeting, type BlockSizeConstraints, type NbdRequest } from './codec';
import { ClientStreamParser, type ClientStreamHandler } from './client-stream-parser';
import { NbdHandshake, type ExportTable, type NbdExport, type Negotiated } from './handshake';
import { NbdTransmission, type SessionStats } from './transmission';
import type { NbdTransport } from './transport';

export type { ExportTable, NbdExport, SessionStats };

export interface SessionOptions {
  exports: ExportTable;
  blockSize: BlockSizeConstraints;
  /** Bytes of requests and replies held for this connection before reading pauses. */
  maxInflightBytes: number;
  pool: BufferPool;
  /** When set, the peer was not admitted: every option fails with NBD_REP_ERR_POLICY and this text. */
  refusal?: string;
}

export type SessionPhase = SessionStats['phase'];

const MAX_OPTION_DATA = 64 * 1024;

export class NbdSession {
  readonly #transport: NbdTransport;
  readonly #options: SessionOptions;
  readonly #log: Logger;
  readonly #parser: ClientStreamParser;
  readonly #handshake: NbdHandshake;
  #transmission: NbdTransmission | undefined;
  readonly #done: Promise<string>;
  #resolveDone!: (reason: string) => void;

  #phase: SessionPhase = 'handshake';
  #paused = false;
  #inflightBytes = 0;
  #transportGone = false;
  #endReason = '';
  #shuttingDown = false;
  readonly #queue: Array<{ request: NbdRequest; payload: readonly Buffer[] | null }> = [];
  #pumping = false;

  readonly stats: SessionStats = {
    phase: 'handshake',
    exportName: undefined,
    bytesRead: 0,
    bytesWritten: 0,
    requests: {},
    inFlight: 0,
    errors: 0,
  };

  constructor(transport: NbdTransport, options: SessionOptions, ctx: { log: Logger }) {
    this.#transport = transport;
    this.#options = options;
    this.#log = ctx.log;
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
    this.#handshake = new NbdHandshake(
      { exports: options.exports, blockSize: options.blockSize, refusal: options.refusal },
      {
        send: (b) => this.#transport.write(b),
        destroy: (reason) => this.destroy(reason),
        close: (reason) => this.#close(reason),
        enterTransmission: (n) => this.#enterTransmission(n),
      },
      ctx.log,
    );
    this.#parser = new ClientStreamParser({ maxOptionData: MAX_OPTION_DATA, maxPayload: options.blockSize.maximum }, this.#parserHandler());
  }

  /** Resolves with a short reason once the connection is closed and no backend call is running. */
  get done(): Promise<string> {
    return this.#done;
  }

  get phase(): SessionPhase {
    return this.#phase;
  }

  start(): void {
    this.#transport.start({
      data: (chunk) => this.#parser.push(chunk),
      end: (error) => {
        this.#transportGone = true;
        this.#parser.stop();
        this.#finish(error ? `connection error: ${error.message}` : this.#endReason || 'client closed the connection');
      },
    });
    this.#transport.write(encodeGreeting());
  }

  /**
   * Server shutdown: answer what is in flight, then close. Options still
   * being negotiated get no more answers. "On a server shutdown, the server
   * SHOULD wait for inflight requests to be serviced prior to initiating a
   * hard disconnect."
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    if (this.#phase === 'handshake') return this.#close('server shut down');
    this.#transmission?.shutDown();
    this.#parser.stop();
    this.#closeWhenIdle('server shut down');
  }

  /** Hard disconnect now. */
  destroy(reason: string): void {
    this.#endReason ||= reason;
    this.#parser.stop();
    this.#setPhase('closing');
    this.#transport.destroy();
  }

  // ------------------------------------------------------------------------

  #parserHandler(): ClientStreamHandler {
    return {
      clientFlags: (flags) => this.#handshake.clientFlags(flags),
      option: (option, data) => this.#handshake.option(option, data),
      optionTooBig: (option, length) => this.#handshake.optionTooBig(option, length),
      payloadStart: () => undefined,
      request: (request, payload) => {
        this.#queue.push({ request, payload });
        if (!this.#pumping) void this.#pump();
      },
      protocolError: (message) => {
        this.#log.debug(`protocol error: ${message}; disconnecting`);
        this.destroy(`protocol error: ${message}`);
      },
    };
  }

  /**
   * Requests of one received chunk are started one after the other with a
   * microtask turn in between, so the reply to a read the page cache served
   * at once is written before the next read starts: sending overlaps with
   * reading instead of waiting for the whole batch.
   */
  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      for (let m = this.#queue.shift(); m; m = this.#queue.shift()) {
        // Nothing more reaches the backend once the client is gone: `done`
        // may already have let the server close it.
        if (this.#transportGone) {
          this.#queue.length = 0;
          break;
        }
        this.#transmission!.request(m.request, m.payload);
        // Yield even when nothing is queued yet: the parser is usually still
        // in the middle of the chunk and about to queue the next request.
        await null;
      }
    } finally {
      this.#pumping = false;
    }
  }

  #hold(bytes: number): void {
    this.#inflightBytes += bytes;
    if (!this.#paused && this.#inflightBytes > this.#options.maxInflightBytes) {
      this.#paused = true;
      this.#transport.pause();
    }
  }

  #release(bytes: number): void {
    this.#inflightBytes -= bytes;
    if (this.#paused && this.#inflightBytes <= this.#options.maxInflightBytes / 2) {
      this.#paused = false;
      this.#transport.resume();
    }
  }

  #enterTransmission(n: Negotiated): void {
    this.stats.exportName = n.export.name;
    this.#transmission = new NbdTransmission(
      n,
      { maxBlockSize: this.#options.blockSize.maximum, pool: this.#options.pool, stats: this.stats, log: this.#log },
      {
        send: (b, done) => this.#transport.write(b, done),
        hold: (bytes) => this.#hold(bytes),
        release: (bytes) => this.#release(bytes),
        disconnect: () => {
          this.#parser.stop();
          this.#closeWhenIdle('client disconnected');
        },
        idle: () => this.#onIdle(),
      },
    );
    this.#setPhase('transmission');
    this.#parser.startTransmission();
  }

  #setPhase(phase: SessionPhase): void {
    this.#phase = phase;
    this.stats.phase = phase;
  }

  get #inFlight(): number {
    return this.#transmission?.inFlight ?? 0;
  }

  #close(reason: string): void {
    this.#endReason ||= reason;
    this.#parser.stop();
    if (this.#phase !== 'closed') this.#setPhase('closing');
    this.#transport.end();
  }

  #closeWhenIdle(reason: string): void {
    this.#endReason ||= reason;
    this.#setPhase('closing');
    if (this.#inFlight === 0) this.#close(reason);
  }

  #onIdle(): void {
    if (this.#transportGone) this.#finish(this.#endReason || 'client closed the connection');
    else if (this.#phase === 'closing') this.#close(this.#endReason);
  }

  #finish(reason: string): void {
    if (this.#phase !== 'closing' && this.#phase !== 'closed') this.#setPhase('closing');
    this.#endReason ||= reason;
    if (this.#inFlight === 0 && this.#phase !== 'closed') {
      this.#setPhase('closed');
      this.#resolveDone(this.#endReason);
    }
  }
}
