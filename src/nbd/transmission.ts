// The transmission phase of one connection: checks each request against the
// spec's rules, runs it on the backend and sends its reply. Requests run
// concurrently and are answered as they complete (out of order). Every byte a
// request holds is counted in the connection's memory budget from the moment
// it is known until it is released (see budget.ts); the session decides
// whether to read the next request.
import type { Logger } from '../log';
import type { Backend } from './backend';
import type { MemoryBudget } from './budget';
import { pooledSize, type BufferPool } from './buffer-pool';
import {
  OFFSET_DATA_PREFIX,
  encodeBlockStatus,
  encodeSimpleReply,
  encodeStructuredError,
  encodeStructuredNone,
  writeOffsetDataPrefix,
  writeSimpleReplyHeader,
  type BlockExtent,
  type NbdRequest,
} from './codec';
import { nbdErrorName, nbdErrorOf } from './errno';
import type { Negotiated } from './handshake';
import * as P from './protocol';

export interface SessionStats {
  phase: 'handshake' | 'transmission' | 'closing' | 'closed';
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
  /** Date.now() of the last request received (of the connection's start before any). */
  lastRequestAt: number;
}

export interface TransmissionHost {
  /** Queue a reply; `done` once the transport no longer needs the buffer. */
  send(reply: Buffer, done?: (error?: Error | null) => void): void;
  /** NBD_CMD_DISC arrived: read nothing more, close once idle. */
  disconnect(): void;
  /** The last request in flight was answered. */
  idle(): void;
}

export interface TransmissionOptions {
  maxBlockSize: number;
  budget: MemoryBudget;
  pool: BufferPool;
  stats: SessionStats;
  log: Logger;
}

/**
 * Bytes counted for each request from its arrival to its reply, besides its
 * data: the request object, its promise and callbacks. Measured with 100,000
 * flushes held in flight: about 740 bytes of heap and 1,000 of RSS each.
 */
export const REQUEST_OVERHEAD = 1024;

/** At most this many descriptors per block status reply; the client asks again for the rest. */
export const MAX_EXTENTS = 1024;

/** A block status request holds its extents (objects, then the encoded reply) while it runs. */
const BLOCK_STATUS_COST = P.NBD_STRUCTURED_REPLY_SIZE + 4 + MAX_EXTENTS * (8 + 2 * 48);

export class NbdTransmission {
  readonly #n: Negotiated;
  readonly #o: TransmissionOptions;
  readonly #host: TransmissionHost;
  readonly #budget: MemoryBudget;
  readonly #stats: SessionStats;
  #inFlight = 0;
  #shuttingDown = false;

  constructor(negotiated: Negotiated, options: TransmissionOptions, host: TransmissionHost) {
    this.#n = negotiated;
    this.#o = options;
    this.#host = host;
    this.#budget = options.budget;
    this.#stats = options.stats;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** From now on every request is answered ESHUTDOWN. */
  shutDown(): void {
    this.#shuttingDown = true;
  }

  /**
   * A write's data is about to be read: it counts from now until the backend
   * has written it, as the pool buffer it is copied into (allocatePayload).
   */
  payloadStart(length: number): void {
    this.#budget.take(pooledSize(length));
  }

  request(req: NbdRequest, payload: readonly Buffer[] | null): void {
    const name = P.commandName(req.type);
    const stats = this.#stats;
    stats.requests[name] = (stats.requests[name] ?? 0) + 1;
    stats.lastRequestAt = Date.now();
    if (req.type === P.NBD_CMD_DISC) {
      // "The server MUST handle all outstanding requests ... and close the
      // TCP session. A client MUST NOT send anything to the server after
      // sending an NBD_CMD_DISC command": whatever follows is not acted on.
      return this.#host.disconnect();
    }
    this.#inFlight++;
    stats.inFlight = this.#inFlight;
    this.#budget.take(REQUEST_OVERHEAD);
    // A write's data was counted as it arrived (payloadStart).
    const held = req.type === P.NBD_CMD_WRITE && payload !== null && req.length > 0 ? pooledSize(req.length) : 0;
    const err = this.#validate(req, payload);
    if (err) {
      if (held) this.#releasePayload(payload!, held);
      this.#replyError(req, err[0], err[1]);
      return this.#done();
    }
    const backend = this.#n.export.backend;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case P.NBD_CMD_READ:
        return this.#read(req, backend);
      case P.NBD_CMD_WRITE:
        return this.#write(req, payload!, held, backend, fua);
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

  #done(): void {
    this.#inFlight--;
    this.#stats.inFlight = this.#inFlight;
    this.#budget.give(REQUEST_OVERHEAD);
    if (this.#inFlight === 0) this.#host.idle();
  }

  /** [error, message] when the request must be refused, per the spec's "Error values". */
  #validate(req: NbdRequest, payload: readonly Buffer[] | null): [number, string] | undefined {
    const backend = this.#n.export.backend;
    const size = backend.size;
    const caps = backend.capabilities;
    const f = this.#n.transmissionFlags;
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
      if (this.#n.blockStatusContext === undefined) return [P.NBD_EINVAL, 'no metadata context was selected'];
    }
    // Payload-bearing requests above the maximum block size: "The server
    // SHOULD report an NBD_EINVAL error if the client's request ... is larger
    // than the advertised maximum block size." The parser has already
    // skipped such a write's data without storing it.
    const max = this.#o.maxBlockSize;
    if ((req.type === P.NBD_CMD_READ || req.type === P.NBD_CMD_WRITE) && req.length > max) {
      return [P.NBD_EINVAL, `length ${req.length} exceeds the maximum block size ${max}`];
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

  /** Sends an error reply (structured when negotiated: it can carry a message). */
  #replyError(req: NbdRequest, error: number, message: string): void {
    this.#stats.errors++;
    this.#o.log.debug(`${P.commandName(req.type)} ${req.offset}+${req.length}: ${nbdErrorName(error)}: ${message}`);
    if (this.#n.structured) this.#host.send(encodeStructuredError(req.handleHi, req.handleLo, error, message));
    else this.#host.send(encodeSimpleReply(error, req.handleHi, req.handleLo));
  }

  #replyOk(req: NbdRequest): void {
    // A simple reply is allowed for everything but NBD_CMD_READ, even with structured replies.
    this.#host.send(encodeSimpleReply(0, req.handleHi, req.handleLo));
  }

  #failed(req: NbdRequest, e: unknown): void {
    const error = nbdErrorOf(e);
    const message = e instanceof Error ? e.message : String(e);
    if (error === P.NBD_EIO) this.#o.log.warn(`${P.commandName(req.type)} at ${req.offset}+${req.length} failed: ${message}`);
    this.#replyError(req, error, message);
    this.#done();
  }

  #simple(req: NbdRequest, op: Promise<void>): void {
    op.then(
      () => {
        this.#replyOk(req);
        this.#done();
      },
      (e: unknown) => this.#failed(req, e),
    );
  }

  /** A write's data is done with: back to the pool, and out of the budget. */
  #releasePayload(payload: readonly Buffer[], cost: number): void {
    for (const b of payload) this.#o.pool.give(b);
    this.#budget.give(cost);
  }

  /** `cost`: what the data counts in the budget (see request()), given back once written. */
  #write(req: NbdRequest, payload: readonly Buffer[], cost: number, backend: Backend, fua: boolean): void {
    const bytes = req.length;
    backend.pwrite(payload, req.offset, { fua }).then(
      () => {
        this.#stats.bytesWritten += bytes;
        this.#releasePayload(payload, cost);
        this.#replyOk(req);
        this.#done();
      },
      (e: unknown) => {
        this.#releasePayload(payload, cost);
        this.#failed(req, e);
      },
    );
  }

  #read(req: NbdRequest, backend: Backend): void {
    const len = req.length;
    if (len === 0) {
      // "The client SHOULD NOT request a read length of 0; the behavior of a
      // server on such a request is unspecified although the server SHOULD NOT disconnect."
      if (this.#n.structured) this.#host.send(encodeStructuredNone(req.handleHi, req.handleLo));
      else this.#replyOk(req);
      return this.#done();
    }
    const structured = this.#n.structured;
    const prefix = structured ? OFFSET_DATA_PREFIX : P.NBD_SIMPLE_REPLY_SIZE;
    const pool = this.#o.pool;
    const budget = this.#budget;
    const buf = pool.take(prefix + len);
    // What the buffer really occupies (its pool size class) counts until the
    // transport no longer needs it.
    const total = buf.buffer.byteLength;
    budget.take(total);
    backend.pread(buf.subarray(prefix), req.offset).then(
      () => {
        // One chunk holds the whole read, so NBD_CMD_FLAG_DF is always honoured.
        if (structured) writeOffsetDataPrefix(buf, 0, P.NBD_REPLY_FLAG_DONE, req.handleHi, req.handleLo, req.offset, len);
        else writeSimpleReplyHeader(buf, 0, 0, req.handleHi, req.handleLo);
        this.#stats.bytesRead += len;
        this.#host.send(buf, () => {
          budget.give(total);
          pool.give(buf);
        });
        this.#done();
      },
      (e: unknown) => {
        budget.give(total);
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
      return this.#done();
    }
    const budget = this.#budget;
    budget.take(BLOCK_STATUS_COST);
    backend.extents(req.offset, length, reqOne ? 1 : MAX_EXTENTS).then(
      (extents) => {
        const out = normalizeExtents(extents, length, reqOne);
        this.#host.send(encodeBlockStatus(req.handleHi, req.handleLo, this.#n.blockStatusContext!, out));
        budget.give(BLOCK_STATUS_COST);
        this.#done();
      },
      (e: unknown) => {
        budget.give(BLOCK_STATUS_COST);
        this.#failed(req, e);
      },
    );
  }
}

/**
 * Makes a backend's answer a valid reply: nonzero 32-bit lengths, merged
 * neighbours, at most MAX_EXTENTS descriptors ("the server MAY return fewer
 * descriptors in the reply than would be required to fully specify the whole
 * range ... if looking up the information would be too resource-intensive
 * for the server, so long as at least one extent is returned"), and, with
 * NBD_CMD_FLAG_REQ_ONE, "exactly one descriptor ... [whose length] MUST NOT be
 * greater than the length of the request".
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
