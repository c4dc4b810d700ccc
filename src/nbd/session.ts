// One client connection: the handshake (handshake.ts), then the transmission
// phase (transmission.ts), over an NbdTransport. The session owns the
// transport, the parser of the client's bytes and the connection's memory
// budget: after each message the parser yields it decides whether to read
// the next one, so no request is looked at while the connection holds more
// than its budget, and none after NBD_CMD_DISC.
import type { Logger } from '../log';
import { MemoryBudget } from './budget';
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
  /** The server's budget, shared by all its connections; without it the connection is alone. */
  serverBudget?: MemoryBudget;
  pool: BufferPool;
  /** When set, the peer was not admitted: every option fails with NBD_REP_ERR_POLICY and this text. */
  refusal?: string;
}

export type SessionPhase = SessionStats['phase'];

/** The end reason (`done`) of a session whose client said NBD_CMD_DISC: it detached the export. */
export const CLIENT_DISCONNECTED = 'client disconnected';

/**
 * What a connection may hold during the handshake: option replies are a few
 * hundred bytes, so this only stops a client that sends options without
 * reading the answers (one reply batch of the transport is 256 KiB).
 */
export const HANDSHAKE_BYTES = 512 * 1024;

const MAX_OPTION_DATA = 64 * 1024;

/** Why the parser is paused: to let replies out between requests, or for the budget. */
const enum Hold {
  None,
  Turn,
  Budget,
}

export class NbdSession {
  readonly #transport: NbdTransport;
  readonly #options: SessionOptions;
  readonly #log: Logger;
  readonly #parser: ClientStreamParser;
  readonly #budget: MemoryBudget;
  readonly #handshake: NbdHandshake;
  #transmission: NbdTransmission | undefined;
  readonly #done: Promise<string>;
  #resolveDone!: (reason: string) => void;

  #phase: SessionPhase = 'handshake';
  #hold = Hold.None;
  #transportGone = false;
  #endReason = '';
  #shuttingDown = false;
  readonly #resumeTurn = (): void => {
    if (this.#hold !== Hold.Turn) return;
    this.#hold = Hold.None;
    this.#parser.resume();
  };
  /** A write whose data waits for room in the budget: its length, counted once it is admitted. */
  #payloadWaiting = 0;
  readonly #resumeBudget = (): void => {
    if (this.#hold !== Hold.Budget) return;
    this.#unhold();
    if (!this.#transportGone) this.#transport.resume();
    this.#parser.resume();
  };

  readonly stats: SessionStats = newSessionStats();

  constructor(transport: NbdTransport, options: SessionOptions, ctx: { log: Logger }) {
    this.#transport = transport;
    this.#options = options;
    this.#log = ctx.log;
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
    this.#budget = (options.serverBudget ?? new MemoryBudget(Infinity)).connection(HANDSHAKE_BYTES);
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
    // A write's data is copied into a pool buffer (counted by the transmission's payloadStart, given back once written).
    this.#parser = new ClientStreamParser(
      { maxOptionData: MAX_OPTION_DATA, maxPayload: options.blockSize.maximum, allocatePayload: (length) => options.pool.take(length) },
      this.#parserHandler(),
    );
  }

  /** Resolves with a short reason once the connection is closed and no backend call is running. */
  get done(): Promise<string> {
    return this.#done;
  }

  get phase(): SessionPhase {
    return this.#phase;
  }

  /** This connection's memory budget (bytes held now and at most). */
  get budget(): MemoryBudget {
    return this.#budget;
  }

  start(): void {
    this.#transport.start({
      data: (chunk) => this.#parser.push(chunk),
      holding: () => this.#parser.holdsInput,
      directTarget: (minimum) => this.#parser.directTarget(minimum),
      filledDirect: (n) => this.#parser.filledDirect(n),
      writesLarge: (minimum) => this.#parser.lastWriteLength >= minimum,
      buffered: (delta) => {
        if (delta > 0) this.#budget.take(delta);
        else this.#budget.give(-delta);
      },
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
   * hard disconnect ... The error value issued in respect of these requests
   * and any subsequently received requests SHOULD be ESHUTDOWN": requests
   * already received get it; nothing more is read.
   */
  shutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    if (this.#phase === 'handshake') return this.#close('server shut down');
    this.#transmission?.shutDown();
    // Already ending (the client's NBD_CMD_DISC): it waits for the client's
    // end, which pausing the socket would hide until the close timeout.
    if (this.#phase !== 'closing' && this.#phase !== 'closed') this.#transport.pause();
    this.#unhold();
    this.#parser.resume();
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
      option: (option, data) => {
        this.#handshake.option(option, data);
        this.#afterMessage();
      },
      optionTooBig: (option, length) => {
        this.#handshake.optionTooBig(option, length);
        this.#afterMessage();
      },
      payloadStart: (length) => {
        // Admitted like any request, before its data is read; over budget,
        // the data stays unread (and uncounted) until there is room.
        if (this.#shuttingDown || this.#budget.admits()) return this.#transmission!.payloadStart(length);
        this.#payloadWaiting = length;
        this.#waitForBudget();
      },
      request: (request, payload) => this.#onRequest(request, payload),
      protocolError: (message) => {
        this.#log.debug(`protocol error: ${message}; disconnecting`);
        this.destroy(`protocol error: ${message}`);
      },
    };
  }

  #onRequest(request: NbdRequest, payload: readonly Buffer[] | null): void {
    this.#transmission!.request(request, payload);
    if (this.#shuttingDown || this.#parser.dead) return;
    this.#afterMessage();
    // Requests of one received chunk are started one after the other with a
    // microtask turn in between, so the reply to a read the page cache
    // served at once is written before the next read starts: sending
    // overlaps with reading instead of waiting for the whole batch.
    if (this.#hold === Hold.None && this.#phase === 'transmission') {
      this.#hold = Hold.Turn;
      this.#parser.pause();
      queueMicrotask(this.#resumeTurn);
    }
  }

  /** Checked after every message: over budget, nothing more is read until there is room. */
  #afterMessage(): void {
    if (!this.#budget.admits()) this.#waitForBudget();
  }

  #unhold(): void {
    this.#hold = Hold.None;
    if (this.#payloadWaiting > 0) {
      this.#transmission!.payloadStart(this.#payloadWaiting);
      this.#payloadWaiting = 0;
    }
  }

  #waitForBudget(): void {
    if (this.#hold === Hold.Budget || this.#parser.dead) return;
    this.#hold = Hold.Budget;
    this.#parser.pause();
    this.#transport.pause();
    this.#budget.waitUntilAdmitted(this.#resumeBudget);
  }

  #enterTransmission(n: Negotiated): void {
    this.stats.exportName = n.export.name;
    this.#transmission = new NbdTransmission(
      n,
      { maxBlockSize: this.#options.blockSize.maximum, budget: this.#budget, pool: this.#options.pool, stats: this.stats, log: this.#log },
      {
        send: (b, done) => this.#transport.write(b, done),
        disconnect: () => {
          this.#parser.stop();
          this.#closeWhenIdle(CLIENT_DISCONNECTED);
        },
        idle: () => this.#onIdle(),
      },
    );
    this.#budget.startSharing(this.#options.maxInflightBytes);
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
      this.#budget.close();
      this.#resolveDone(this.#endReason);
    }
  }
}

/** A session's counters before anything happened (also a worker's connection's, until its first report). */
export function newSessionStats(): SessionStats {
  return { phase: 'handshake', exportName: undefined, bytesRead: 0, bytesWritten: 0, requests: {}, inFlight: 0, errors: 0, lastRequestAt: Date.now() };
}
