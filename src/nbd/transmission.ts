// The transmission phase of one connection: checks each request against the
// spec's rules, runs it on the backend and sends its reply. Requests run
// concurrently and are answered as they complete (out of order); the bytes
// of reads and writes are held through the host, which pauses reading while
// too many are held.
import type { Logger } from '../log';
import type { Backend } from './backend';
import type { BufferPool } from './buffer-pool';
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
}

export interface TransmissionHost {
  /** Queue a reply; `done` once it has been handed to the OS. */
  send(reply: Buffer, done?: (error?: Error | null) => void): void;
  /** Bytes of a request or reply held from now on / no longer. */
  hold(bytes: number): void;
  release(bytes: number): void;
  /** NBD_CMD_DISC arrived: read nothing more, close once idle. */
  disconnect(): void;
  /** The last request in flight was answered. */
  idle(): void;
}

export interface TransmissionOptions {
  maxBlockSize: number;
  pool: BufferPool;
  stats: SessionStats;
  log: Logger;
}

/** At most this many descriptors per reply; the client asks again for the rest. */
const MAX_EXTENTS = 1024;

export class NbdTransmission {
  readonly #n: Negotiated;
  readonly #o: TransmissionOptions;
  readonly #host: TransmissionHost;
  readonly #stats: SessionStats;
  #inFlight = 0;
  #shuttingDown = false;

  constructor(negotiated: Negotiated, options: TransmissionOptions, host: TransmissionHost) {
    this.#n = negotiated;
    this.#o = options;
    this.#host = host;
    this.#stats = options.stats;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** From now on every request is answered ESHUTDOWN. */
  shutDown(): void {
    this.#shuttingDown = true;
  }

  request(req: NbdRequest, payload: readonly Buffer[] | null): void {
    const name = P.commandName(req.type);
    const stats = this.#stats;
    stats.requests[name] = (stats.requests[name] ?? 0) + 1;
    if (req.type === P.NBD_CMD_DISC) {
      // "The server MUST handle all outstanding requests ... and close the
      // TCP session. A client MUST NOT send anything to the server after
      // sending an NBD_CMD_DISC command": whatever follows is not acted on.
      return this.#host.disconnect();
    }
    this.#inFlight++;
    stats.inFlight = this.#inFlight;
    const err = this.#validate(req, payload);
    if (err) {
      this.#replyError(req, err[0], err[1]);
      return this.#done();
    }
    const backend = this.#n.export.backend;
    const fua = (req.flags & P.NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case P.NBD_CMD_READ:
        return this.#read(req, backend);
      case P.NBD_CMD_WRITE:
        return this.#write(req, payload!, backend, fua);
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

  #write(req: NbdRequest, payload: readonly Buffer[], backend: Backend, fua: boolean): void {
    const bytes = req.length;
    this.#host.hold(bytes);
    backend.pwrite(payload, req.offset, { fua }).then(
      () => {
        this.#stats.bytesWritten += bytes;
        this.#host.release(bytes);
        this.#replyOk(req);
        this.#done();
      },
      (e: unknown) => {
        this.#host.release(bytes);
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
    const host = this.#host;
    const buf = pool.take(prefix + len);
    const total = buf.length;
    host.hold(total);
    backend.pread(buf.subarray(prefix), req.offset).then(
      () => {
        // One chunk holds the whole read, so NBD_CMD_FLAG_DF is always honoured.
        if (structured) writeOffsetDataPrefix(buf, 0, P.NBD_REPLY_FLAG_DONE, req.handleHi, req.handleLo, req.offset, len);
        else writeSimpleReplyHeader(buf, 0, 0, req.handleHi, req.handleLo);
        this.#stats.bytesRead += len;
        host.send(buf, () => {
          host.release(total);
          pool.give(buf);
        });
        this.#done();
      },
      (e: unknown) => {
        host.release(total);
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
    backend.extents(req.offset, length).then(
      (extents) => {
        const out = normalizeExtents(extents, length, reqOne);
        this.#host.send(encodeBlockStatus(req.handleHi, req.handleLo, this.#n.blockStatusContext!, out));
        this.#done();
      },
      (e: unknown) => this.#failed(req, e),
    );
  }
}

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
