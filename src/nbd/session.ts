// One client connection: the fixed-newstyle handshake, then the
// transmission phase, as a state machine over an NbdTransport. Requests run
// concurrently against the backend and are answered as they complete (out
// of order); bytes held for a connection are bounded, and reading from the
// client pauses while the bound is exceeded.
import type { Logger } from '../log';
import type { Backend } from './backend';
import type { BufferPool } from './buffer-pool';
import {
  ClientStreamParser,
  NbdDecodeError,
  OFFSET_DATA_PREFIX,
  decodeGoOption,
  decodeMetaContextOption,
  encodeBlockStatus,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeSimpleReply,
  encodeStructuredError,
  encodeStructuredNone,
  writeOffsetDataPrefix,
  writeSimpleReplyHeader,
  type BlockExtent,
  type BlockSizeConstraints,
  type ClientMessage,
  type NbdRequest,
} from './codec';
import { nbdErrorName, nbdErrorOf } from './errno';
import * as P from './protocol';
import type { NbdTransport } from './transport';

export interface NbdExport {
  /** The export's name; the empty name also selects it when it is the default. */
  name: string;
  description?: string;
  backend: Backend;
}

export interface ExportTable {
  /** The export for a client-supplied name ('' = the default), or undefined. */
  lookup(name: string): NbdExport | undefined;
  /** Every export, for NBD_OPT_LIST. */
  list(): readonly NbdExport[];
}

export interface SessionOptions {
  exports: ExportTable;
  blockSize: BlockSizeConstraints;
  /** Bytes of requests and replies held for this connection before reading pauses. */
  maxInflightBytes: number;
  pool: BufferPool;
  /** When set, the peer was not admitted: every option fails with NBD_REP_ERR_POLICY and this text. */
  refusal?: string;
}

export type SessionPhase = 'handshake' | 'transmission' | 'closing' | 'closed';

export interface SessionStats {
  phase: SessionPhase;
  exportName: string | undefined;
  /** Payload bytes read from / written to the export. */
  bytesRead: number;
  bytesWritten: number;
  /** Requests received, by command name (NBD_CMD_READ...). */
  requests: Record<string, number>;
  /** Requests received whose reply is not yet sent. */
  inFlight: number;
  /** Replies that carried an error. */
  errors: number;
}

const BASE_ALLOCATION_ID = 1;

const MAX_OPTION_DATA = 64 * 1024;

export class NbdSession {
  readonly #transport: NbdTransport;
  readonly #options: SessionOptions;
  readonly #log: Logger;
  readonly #parser: ClientStreamParser;
  readonly #done: Promise<string>;
  #resolveDone!: (reason: string) => void;

  #phase: SessionPhase = 'handshake';
  #noZeroes = false;
  #structured = false;
  /** Export name the last NBD_OPT_SET_META_CONTEXT selected base:allocation for, if any. */
  #metaExport: string | undefined;
  #export: NbdExport | undefined;
  #transmissionFlags = 0;
  #paused = false;
  #inflightBytes = 0;
  #inflightRequests = 0;
  #transportGone = false;
  #endReason = '';
  #shuttingDown = false;
  readonly #queue: Array<{ request: NbdRequest; payload: Buffer[] | null }> = [];
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
    this.#parser = new ClientStreamParser(
      { maxOptionData: MAX_OPTION_DATA, maxPayload: options.blockSize.maximum },
      (m) => this.#onMessage(m),
    );
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
    this.#send(encodeGreeting());
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
    if (this.#phase === 'handshake') {
      this.#close('server shut down');
      return;
    }
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

  #setPhase(phase: SessionPhase): void {
    this.#phase = phase;
    this.stats.phase = phase;
  }

  #send(buf: Buffer, done?: (error?: Error | null) => void): void {
    this.#transport.write(buf, done);
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
    if (this.#inflightRequests === 0) this.#close(reason);
  }

  #finish(reason: string): void {
    if (this.#phase !== 'closing' && this.#phase !== 'closed') this.#setPhase('closing');
    this.#endReason ||= reason;
    if (this.#inflightRequests === 0 && this.#phase !== 'closed') {
      this.#setPhase('closed');
      this.#resolveDone(this.#endReason);
    }
  }

  #onMessage(m: ClientMessage): void {
    switch (m.kind) {
      case 'client-flags':
        return this.#onClientFlags(m.flags);
      case 'option':
        return this.#onOption(m.option, m.data);
      case 'option-too-big':
        if (m.option === P.NBD_OPT_EXPORT_NAME) return this.destroy('export name too long');
        return this.#optionError(m.option, P.NBD_REP_ERR_TOO_BIG, `option data of ${m.length} bytes is too large`);
      case 'request':
        this.#queue.push(m);
        if (!this.#pumping) void this.#pump();
        return;
      case 'protocol-error':
        this.#log.debug(`protocol error: ${m.message}; disconnecting`);
        return this.destroy(`protocol error: ${m.message}`);
    }
  }

  #onClientFlags(flags: number): void {
    // "Clients MUST NOT set any other flags; the server MUST drop the TCP
    // connection if the client sets an unknown flag, or a flag that does not
    // match something advertised by the server."
    if ((flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
      return this.destroy(`unknown client flags 0x${flags.toString(16)}`);
    }
    this.#noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
  }

  // --- Handshake ------------------------------------------------------------

  #optionError(option: number, replyType: number, message: string): void {
    this.#log.debug(`${P.optionName(option)}: ${message}`);
    this.#send(encodeOptionError(option, replyType, message));
  }

  #onOption(option: number, data: Buffer): void {
    this.#log.debug(`option ${P.optionName(option)} (${data.length} bytes)`);
    if (option === P.NBD_OPT_ABORT) {
      // "The server MUST reply with NBD_REP_ACK" (and ignore any data).
      this.#send(encodeOptionReply(option, P.NBD_REP_ACK));
      return this.#close('client aborted the handshake');
    }
    const refusal = this.#options.refusal;
    if (refusal !== undefined) {
      // NBD_OPT_EXPORT_NAME cannot carry an error: "If the server is
      // unwilling to allow the export, it MUST terminate the session."
      if (option === P.NBD_OPT_EXPORT_NAME) return this.destroy(`refused: ${refusal}`);
      return this.#optionError(option, P.NBD_REP_ERR_POLICY, refusal);
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME:
        return this.#onExportName(data);
      case P.NBD_OPT_LIST:
        // "The client MUST NOT send any additional data with the option, and
        // the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID."
        if (data.length !== 0) return this.#optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
        for (const e of this.#options.exports.list()) this.#send(encodeRepServer(option, e.name, e.description ?? ''));
        this.#send(encodeOptionReply(option, P.NBD_REP_ACK));
        return;
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.#onInfoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.#optionError(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.#structured = true;
        this.#send(encodeOptionReply(option, P.NBD_REP_ACK));
        return;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        return this.#onMetaContext(option, data);
      default:
        // NBD_OPT_STARTTLS included: this server runs in NOTLS mode ("If the
        // server receives NBD_OPT_STARTTLS it MUST respond with ...
        // NBD_REP_ERR_UNSUP (if it does not support the NBD_OPT_STARTTLS
        // option at all)"). "Servers that receive messages which they do not
        // implement MUST reply to them with NBD_REP_ERR_UNSUP, and MUST NOT
        // fail to parse the next message received."
        return this.#optionError(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported by this server`);
    }
  }

  #flagsFor(exp: NbdExport): number {
    const c = exp.backend.capabilities;
    let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH;
    if (c.readOnly) f |= P.NBD_FLAG_READ_ONLY;
    else {
      if (c.fua) f |= P.NBD_FLAG_SEND_FUA;
      if (c.trim) f |= P.NBD_FLAG_SEND_TRIM;
      if (c.zero) {
        f |= P.NBD_FLAG_SEND_WRITE_ZEROES;
        if (c.fastZero) f |= P.NBD_FLAG_SEND_FAST_ZERO;
      }
    }
    // "MUST leave this flag clear if structured replies have not been negotiated."
    if (this.#structured) f |= P.NBD_FLAG_SEND_DF;
    if (c.multiConn) f |= P.NBD_FLAG_CAN_MULTI_CONN;
    if (c.cache) f |= P.NBD_FLAG_SEND_CACHE;
    return f;
  }

  #onExportName(data: Buffer): void {
    let name: string;
    try {
      name = decodeStringLoose(data);
    } catch {
      return this.destroy('export name is not a valid string');
    }
    const exp = this.#options.exports.lookup(name);
    // "If the chosen export does not exist ... the server MUST terminate the session."
    if (!exp) return this.destroy(`unknown export '${name}'`);
    const flags = this.#flagsFor(exp);
    this.#send(encodeExportNameReply(exp.backend.size, flags, this.#noZeroes));
    this.#enterTransmission(exp, flags);
  }

  #onInfoOrGo(option: number, data: Buffer): void {
    let go;
    try {
      go = decodeGoOption(data);
    } catch (err) {
      return this.#optionError(option, P.NBD_REP_ERR_INVALID, err instanceof NbdDecodeError ? err.message : 'invalid option data');
    }
    const exp = this.#options.exports.lookup(go.name);
    if (!exp) return this.#optionError(option, P.NBD_REP_ERR_UNKNOWN, `there is no export named '${go.name}'`);
    const flags = this.#flagsFor(exp);
    // "the server MUST send at least one NBD_REP_INFO, with an NBD_INFO_EXPORT information type."
    this.#send(encodeInfoExport(option, exp.backend.size, flags));
    if (go.infoRequests.includes(P.NBD_INFO_NAME)) this.#send(encodeInfoString(option, P.NBD_INFO_NAME, exp.name));
    if (go.infoRequests.includes(P.NBD_INFO_DESCRIPTION) && exp.description) {
      this.#send(encodeInfoString(option, P.NBD_INFO_DESCRIPTION, exp.description));
    }
    // Sent even when not requested: our minimum is 1, so a client that
    // ignores it loses nothing.
    this.#send(encodeInfoBlockSize(option, this.#options.blockSize));
    this.#send(encodeOptionReply(option, P.NBD_REP_ACK));
    if (option === P.NBD_OPT_GO) this.#enterTransmission(exp, flags);
  }

  #onMetaContext(option: number, data: Buffer): void {
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    // "Issuing this command replaces all previously-set metadata contexts (including when this command fails)"
    if (set) this.#metaExport = undefined;
    // "This option MUST NOT be requested unless structured replies have been
    // negotiated first. If a client attempts to do so, a server SHOULD send NBD_REP_ERR_INVALID."
    if (!this.#structured) return this.#optionError(option, P.NBD_REP_ERR_INVALID, 'negotiate structured replies first');
    let req;
    try {
      req = decodeMetaContextOption(data);
    } catch (err) {
      return this.#optionError(option, P.NBD_REP_ERR_INVALID, err instanceof NbdDecodeError ? err.message : 'invalid option data');
    }
    if (!this.#options.exports.lookup(req.exportName)) {
      return this.#optionError(option, P.NBD_REP_ERR_UNKNOWN, `there is no export named '${req.exportName}'`);
    }
    let selected: boolean;
    if (set) {
      // "If zero queries are sent, the server MUST select no metadata contexts";
      // "base:" alone "MUST [be ignored] during NBD_OPT_SET_META_CONTEXT".
      selected = req.queries.includes(P.BASE_ALLOCATION);
    } else {
      // Zero queries list everything; "base:" is a wildcard for the base namespace.
      selected = req.queries.length === 0 || req.queries.some((q) => q === P.BASE_ALLOCATION || q === 'base:');
    }
    if (selected) {
      this.#send(encodeRepMetaContext(option, set ? BASE_ALLOCATION_ID : 0, P.BASE_ALLOCATION));
      if (set) this.#metaExport = req.exportName;
    }
    this.#send(encodeOptionReply(option, P.NBD_REP_ACK));
  }

  #enterTransmission(exp: NbdExport, flags: number): void {
    this.#export = exp;
    this.#transmissionFlags = flags;
    this.stats.exportName = exp.name;
    // Block status only for the export the contexts were selected for.
    if (this.#metaExport !== undefined && this.#options.exports.lookup(this.#metaExport) !== exp) this.#metaExport = undefined;
    this.#setPhase('transmission');
    this.#parser.startTransmission();
    this.#log.debug(`transmission: export '${exp.name}', flags 0x${flags.toString(16)}, structured ${this.#structured}`);
  }

  // --- Transmission --------------------------------------------------------

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
        this.#onRequest(m.request, m.payload);
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

  #requestDone(): void {
    this.#inflightRequests--;
    this.stats.inFlight = this.#inflightRequests;
    if (this.#inflightRequests === 0) {
      if (this.#transportGone) this.#finish(this.#endReason || 'client closed the connection');
      else if (this.#phase === 'closing') this.#close(this.#endReason);
    }
  }

  /** Sends an error reply (structured when negotiated: it can carry a message). */
  #replyError(req: NbdRequest, error: number, message: string): void {
    this.stats.errors++;
    this.#log.debug(`${P.commandName(req.type)} ${req.offset}+${req.length}: ${nbdErrorName(error)}: ${message}`);
    if (this.#structured) this.#send(encodeStructuredError(req.handleHi, req.handleLo, error, message));
    else this.#send(encodeSimpleReply(error, req.handleHi, req.handleLo));
  }

  #replyOk(req: NbdRequest): void {
    // A simple reply is allowed for everything but NBD_CMD_READ, even with structured replies.
    this.#send(encodeSimpleReply(0, req.handleHi, req.handleLo));
  }

  #onRequest(req: NbdRequest, payload: Buffer[] | null): void {
    const exp = this.#export!;
    const name = P.commandName(req.type);
    this.stats.requests[name] = (this.stats.requests[name] ?? 0) + 1;

    if (req.type === P.NBD_CMD_DISC) {
      // "The server MUST handle all outstanding requests ... and close the TCP session."
      this.#parser.stop();
      return this.#closeWhenIdle('client disconnected');
    }
    this.#inflightRequests++;
    this.stats.inFlight = this.#inflightRequests;
    const err = this.#validate(req, payload, exp);
    if (err) {
      this.#replyError(req, err[0], err[1]);
      return this.#requestDone();
    }
    const backend = exp.backend;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case P.NBD_CMD_READ:
        return this.#read(req, backend);
      case P.NBD_CMD_WRITE: {
        const bytes = req.length;
        this.#hold(bytes);
        backend.pwrite(payload!, req.offset, { fua }).then(
          () => {
            this.stats.bytesWritten += bytes;
            this.#release(bytes);
            this.#replyOk(req);
            this.#requestDone();
          },
          (e: unknown) => {
            this.#release(bytes);
            this.#failed(req, e);
          },
        );
        return;
      }
      case P.NBD_CMD_FLUSH:
        return this.#simple(req, backend.flush());
      case P.NBD_CMD_TRIM:
        return this.#simple(req, backend.trim(req.offset, req.length, { fua }));
      case P.NBD_CMD_CACHE:
        return this.#simple(req, backend.cache(req.offset, req.length));
      case P.NBD_CMD_WRITE_ZEROES:
        return this.#simple(
          req,
          backend.writeZeroes(req.offset, req.length, {
            fua,
            mayTrim: (req.flags & P.NBD_CMD_FLAG_NO_HOLE) === 0,
            fast: (req.flags & P.NBD_CMD_FLAG_FAST_ZERO) !== 0,
          }),
        );
      case P.NBD_CMD_BLOCK_STATUS:
        return this.#blockStatus(req, backend);
    }
  }

  /** [error, message] when the request must be refused, per the spec's "Error values". */
  #validate(req: NbdRequest, payload: Buffer[] | null, exp: NbdExport): [number, string] | undefined {
    const size = exp.backend.size;
    const caps = exp.backend.capabilities;
    const f = this.#transmissionFlags;
    if (this.#shuttingDown) return [P.NBD_ESHUTDOWN, 'the server is shutting down'];
    // Flags valid per command. NBD_CMD_FLAG_FUA "is valid for all commands,
    // provided NBD_FLAG_SEND_FUA has been negotiated".
    let allowed = f & P.NBD_FLAG_SEND_FUA ? P.NBD_CMD_FLAG_FUA : 0;
    const isWrite = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_TRIM || req.type === P.NBD_CMD_WRITE_ZEROES;
    switch (req.type) {
      case P.NBD_CMD_READ:
        if (f & P.NBD_FLAG_SEND_DF) allowed |= P.NBD_CMD_FLAG_DF;
        break;
      case P.NBD_CMD_WRITE_ZEROES:
        allowed |= P.NBD_CMD_FLAG_NO_HOLE;
        if (f & P.NBD_FLAG_SEND_FAST_ZERO) allowed |= P.NBD_CMD_FLAG_FAST_ZERO;
        break;
      case P.NBD_CMD_BLOCK_STATUS:
        allowed |= P.NBD_CMD_FLAG_REQ_ONE;
        break;
      case P.NBD_CMD_WRITE:
      case P.NBD_CMD_FLUSH:
      case P.NBD_CMD_TRIM:
      case P.NBD_CMD_CACHE:
        break;
      default:
        // "The server SHOULD return NBD_EINVAL if it receives an unknown command."
        return [P.NBD_EINVAL, `unknown command ${req.type}`];
    }
    // "SHOULD return NBD_EINVAL if it receives an unknown command flag ... or
    // a flag not explicitly documented as applicable to the given request."
    if ((req.flags & ~allowed) !== 0) return [P.NBD_EINVAL, `flags 0x${req.flags.toString(16)} are not valid for ${P.commandName(req.type)}`];
    if (req.type === P.NBD_CMD_FLUSH) {
      // "For a flush request, length and offset are reserved, and MUST be set to all-zero."
      if (req.offset !== 0 || req.length !== 0) return [P.NBD_EINVAL, 'NBD_CMD_FLUSH must have offset and length 0'];
      return undefined;
    }
    // "it SHOULD return NBD_EPERM if it receives a write or trim request on a read-only export."
    if (isWrite && caps.readOnly) return [P.NBD_EPERM, 'the export is read-only'];
    if (req.type === P.NBD_CMD_TRIM && !caps.trim) return [P.NBD_EINVAL, 'trim is not supported by this export'];
    if (req.type === P.NBD_CMD_WRITE_ZEROES && !caps.zero) return [P.NBD_EINVAL, 'write zeroes is not supported by this export'];
    if (req.type === P.NBD_CMD_BLOCK_STATUS) {
      // "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS without selecting at least one metadata context."
      if (!this.#structured || this.#metaExport === undefined) return [P.NBD_EINVAL, 'no metadata context was selected'];
    }
    // Payload-bearing requests above the maximum block size: "The server
    // SHOULD report an NBD_EINVAL error if the client's request ... is larger
    // than the advertised maximum block size." The parser has already
    // skipped such a write's data without storing it.
    if ((req.type === P.NBD_CMD_READ || req.type === P.NBD_CMD_WRITE) && req.length > this.#options.blockSize.maximum) {
      return [P.NBD_EINVAL, `length ${req.length} exceeds the maximum block size ${this.#options.blockSize.maximum}`];
    }
    if (req.type === P.NBD_CMD_WRITE && payload === null) return [P.NBD_EINVAL, 'write payload too large'];
    if (req.offset > size || req.length > size - req.offset) {
      // "The server SHOULD return NBD_ENOSPC if it receives a write request
      // including one or more sectors beyond the size of the device ... It
      // SHOULD return NBD_EINVAL if it receives a read or trim request
      // including one or more sectors beyond the size of the device"
      const write = req.type === P.NBD_CMD_WRITE || req.type === P.NBD_CMD_WRITE_ZEROES;
      return [write ? P.NBD_ENOSPC : P.NBD_EINVAL, `range ${req.offset}+${req.length} is beyond the end of the ${size}-byte export`];
    }
    return undefined;
  }

  #simple(req: NbdRequest, op: Promise<void>): void {
    op.then(
      () => {
        this.#replyOk(req);
        this.#requestDone();
      },
      (e: unknown) => this.#failed(req, e),
    );
  }

  #failed(req: NbdRequest, e: unknown): void {
    const error = nbdErrorOf(e);
    const message = e instanceof Error ? e.message : String(e);
    if (error === P.NBD_EIO) this.#log.warn(`${P.commandName(req.type)} at ${req.offset}+${req.length} failed: ${message}`);
    this.#replyError(req, error, message);
    this.#requestDone();
  }

  #read(req: NbdRequest, backend: Backend): void {
    const len = req.length;
    if (len === 0) {
      // "The client SHOULD NOT request a read length of 0; the behavior of a
      // server on such a request is unspecified although the server SHOULD NOT disconnect."
      if (this.#structured) this.#send(encodeStructuredNone(req.handleHi, req.handleLo));
      else this.#replyOk(req);
      return this.#requestDone();
    }
    const prefix = this.#structured ? OFFSET_DATA_PREFIX : P.NBD_SIMPLE_REPLY_SIZE;
    const pool = this.#options.pool;
    const buf = pool.take(prefix + len);
    const total = buf.length;
    this.#hold(total);
    backend.pread(buf.subarray(prefix), req.offset).then(
      () => {
        // One chunk holds the whole read, so NBD_CMD_FLAG_DF is always honoured.
        if (this.#structured) writeOffsetDataPrefix(buf, 0, P.NBD_REPLY_FLAG_DONE, req.handleHi, req.handleLo, req.offset, len);
        else writeSimpleReplyHeader(buf, 0, 0, req.handleHi, req.handleLo);
        this.stats.bytesRead += len;
        this.#send(buf, () => {
          this.#release(total);
          pool.give(buf);
        });
        this.#requestDone();
      },
      (e: unknown) => {
        this.#release(total);
        pool.give(buf);
        this.#failed(req, e);
      },
    );
  }

  #blockStatus(req: NbdRequest, backend: Backend): void {
    const reqOne = (req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
    const length = req.length;
    if (length === 0) {
      this.#replyError(req, P.NBD_EINVAL, 'block status of 0 bytes');
      return this.#requestDone();
    }
    backend.extents(req.offset, length).then(
      (extents) => {
        const out = normalizeExtents(extents, length, reqOne);
        this.#send(encodeBlockStatus(req.handleHi, req.handleLo, BASE_ALLOCATION_ID, out));
        this.#requestDone();
      },
      (e: unknown) => this.#failed(req, e),
    );
  }
}

/** At most this many descriptors per reply; the client asks again for the rest. */
const MAX_EXTENTS = 1024;

/**
 * Makes a backend's answer a valid reply: nonzero 32-bit lengths, merged
 * neighbours, and, with NBD_CMD_FLAG_REQ_ONE, "exactly one descriptor ...
 * [whose length] MUST NOT be greater than the length of the request".
 */
export function normalizeExtents(extents: readonly BlockExtent[], length: number, reqOne: boolean): BlockExtent[] {
  const out: BlockExtent[] = [];
  let covered = 0;
  for (const e of extents) {
    if (e.length <= 0) continue;
    // Never beyond the request (allowed, but nothing gains from it).
    let left = Math.min(e.length, length - covered);
    while (left > 0) {
      // Keep each descriptor a multiple of 512 where it is split, below 2^32.
      const n = Math.min(left, 0xfffffe00);
      const last = out[out.length - 1];
      if (last && last.flags === e.flags && last.length + n <= 0xfffffe00) last.length += n;
      else out.push({ length: n, flags: e.flags });
      left -= n;
      covered += n;
    }
    if (covered >= length || out.length >= MAX_EXTENTS) break;
  }
  if (out.length === 0) out.push({ length, flags: 0 });
  if (out.length > MAX_EXTENTS) out.length = MAX_EXTENTS;
  if (reqOne) {
    const first = out[0]!;
    return [{ length: Math.min(first.length, length), flags: first.flags }];
  }
  return out;
}

/** NBD_OPT_EXPORT_NAME's data is the name itself (no length prefix). */
function decodeStringLoose(data: Buffer): string {
  if (data.includes(0) || data.length > P.NBD_MAX_STRING) throw new NbdDecodeError('bad export name');
  return new TextDecoder('utf-8', { fatal: true }).decode(data);
}
