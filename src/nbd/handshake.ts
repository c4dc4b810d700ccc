// The fixed-newstyle handshake of one connection ("option haggling"): client
// flags, then options until NBD_OPT_GO or NBD_OPT_EXPORT_NAME choose an
// export. Talks only to its host (the session), which owns the transport:
// kept apart from transmission as nbdkit keeps
// protocol-handshake-newstyle.c apart from protocol.c.
import type { Logger } from '../log';
import type { Backend } from './backend';
import {
  NbdDecodeError,
  decodeGoOption,
  decodeMetaContextOption,
  decodeString,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  type BlockSizeConstraints,
} from './codec';
import * as P from './protocol';

export interface NbdExport {
  /** The export's name; the empty name also selects it when it is the default. */
  name: string;
  description?: string;
  backend: Backend;
  /** The file or block device behind `backend`, for a server's worker processes to open again. */
  file?: { path: string; readOnly: boolean };
}

export interface ExportTable {
  /** The export for a client-supplied name ('' = the default), or undefined. */
  lookup(name: string): NbdExport | undefined;
  /** Every export, for NBD_OPT_LIST. */
  list(): readonly NbdExport[];
}

/** What the handshake agreed on: everything transmission needs to know. */
export interface Negotiated {
  export: NbdExport;
  transmissionFlags: number;
  structured: boolean;
  /** The id of the base:allocation context when it was selected for this export. */
  blockStatusContext: number | undefined;
}

export interface HandshakeOptions {
  exports: ExportTable;
  blockSize: BlockSizeConstraints;
  /** When set, the peer was not admitted: every option fails with NBD_REP_ERR_POLICY and this text. */
  refusal?: string;
}

export interface HandshakeHost {
  send(reply: Buffer): void;
  /** A hard disconnect, now. */
  destroy(reason: string): void;
  /** Send what is queued, then close. */
  close(reason: string): void;
  /** The handshake is over; the next bytes from the client are requests. */
  enterTransmission(negotiated: Negotiated): void;
}

const BASE_ALLOCATION_ID = 1;

export class NbdHandshake {
  readonly #options: HandshakeOptions;
  readonly #host: HandshakeHost;
  readonly #log: Logger;
  #noZeroes = false;
  #structured = false;
  /** Export name the last NBD_OPT_SET_META_CONTEXT selected base:allocation for, if any. */
  #metaExport: string | undefined;

  constructor(options: HandshakeOptions, host: HandshakeHost, log: Logger) {
    this.#options = options;
    this.#host = host;
    this.#log = log;
  }

  clientFlags(flags: number): void {
    // "Clients MUST NOT set any other flags; the server MUST drop the TCP
    // connection if the client sets an unknown flag, or a flag that does not
    // match something advertised by the server."
    if ((flags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES)) !== 0) {
      return this.#host.destroy(`unknown client flags 0x${flags.toString(16)}`);
    }
    this.#noZeroes = (flags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
  }

  optionTooBig(option: number, length: number): void {
    if (option === P.NBD_OPT_EXPORT_NAME) return this.#host.destroy('export name too long');
    this.#error(option, P.NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is too large`);
  }

  option(option: number, data: Buffer): void {
    this.#log.debug(`option ${P.optionName(option)} (${data.length} bytes)`);
    if (option === P.NBD_OPT_ABORT) {
      // "The server MUST reply with NBD_REP_ACK" (and ignore any data).
      this.#host.send(encodeOptionReply(option, P.NBD_REP_ACK));
      return this.#host.close('client aborted the handshake');
    }
    const refusal = this.#options.refusal;
    if (refusal !== undefined) {
      // NBD_OPT_EXPORT_NAME cannot carry an error: "If the server is
      // unwilling to allow the export, it MUST terminate the session."
      if (option === P.NBD_OPT_EXPORT_NAME) return this.#host.destroy(`refused: ${refusal}`);
      return this.#error(option, P.NBD_REP_ERR_POLICY, refusal);
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME:
        return this.#exportName(data);
      case P.NBD_OPT_LIST:
        return this.#list(data);
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO:
        return this.#infoOrGo(option, data);
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.#error(option, P.NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        this.#structured = true;
        this.#host.send(encodeOptionReply(option, P.NBD_REP_ACK));
        return;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT:
        return this.#metaContext(option, data);
      default:
        // NBD_OPT_STARTTLS included: this server runs in NOTLS mode ("If the
        // server receives NBD_OPT_STARTTLS it MUST respond with ...
        // NBD_REP_ERR_UNSUP (if it does not support the NBD_OPT_STARTTLS
        // option at all)"). "Servers that receive messages which they do not
        // implement MUST reply to them with NBD_REP_ERR_UNSUP, and MUST NOT
        // fail to parse the next message received."
        return this.#error(option, P.NBD_REP_ERR_UNSUP, `${P.optionName(option)} is not supported by this server`);
    }
  }

  #error(option: number, replyType: number, message: string): void {
    this.#log.debug(`${P.optionName(option)}: ${message}`);
    this.#host.send(encodeOptionError(option, replyType, message));
  }

  #list(data: Buffer): void {
    // "The client MUST NOT send any additional data with the option, and
    // the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID."
    if (data.length !== 0) return this.#error(P.NBD_OPT_LIST, P.NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
    for (const e of this.#options.exports.list()) this.#host.send(encodeRepServer(P.NBD_OPT_LIST, e.name, e.description ?? ''));
    this.#host.send(encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_ACK));
  }

  #exportName(data: Buffer): void {
    // NBD_OPT_EXPORT_NAME's data is the name itself, without a length.
    let name: string;
    try {
      name = decodeString(data, 'export name');
    } catch {
      return this.#host.destroy('export name is not a valid string');
    }
    const exp = this.#options.exports.lookup(name);
    // "If the chosen export does not exist ... the server MUST terminate the session."
    if (!exp) return this.#host.destroy(`unknown export '${name}'`);
    const flags = this.#flagsFor(exp);
    this.#host.send(encodeExportNameReply(exp.backend.size, flags, this.#noZeroes));
    this.#enter(exp, flags);
  }

  #infoOrGo(option: number, data: Buffer): void {
    let go;
    try {
      go = decodeGoOption(data);
    } catch (err) {
      return this.#error(option, P.NBD_REP_ERR_INVALID, err instanceof NbdDecodeError ? err.message : 'invalid option data');
    }
    const exp = this.#options.exports.lookup(go.name);
    if (!exp) return this.#error(option, P.NBD_REP_ERR_UNKNOWN, `there is no export named '${go.name}'`);
    const flags = this.#flagsFor(exp);
    const send = (b: Buffer): void => this.#host.send(b);
    // "the server MUST send at least one NBD_REP_INFO, with an NBD_INFO_EXPORT information type."
    send(encodeInfoExport(option, exp.backend.size, flags));
    if (go.infoRequests.includes(P.NBD_INFO_NAME)) send(encodeInfoString(option, P.NBD_INFO_NAME, exp.name));
    if (go.infoRequests.includes(P.NBD_INFO_DESCRIPTION) && exp.description) {
      send(encodeInfoString(option, P.NBD_INFO_DESCRIPTION, exp.description));
    }
    // Sent even when not requested: our minimum is 1, so a client that
    // ignores it loses nothing.
    send(encodeInfoBlockSize(option, this.#options.blockSize));
    send(encodeOptionReply(option, P.NBD_REP_ACK));
    if (option === P.NBD_OPT_GO) this.#enter(exp, flags);
  }

  #metaContext(option: number, data: Buffer): void {
    const set = option === P.NBD_OPT_SET_META_CONTEXT;
    // "Issuing this command replaces all previously-set metadata contexts (including when this command fails)"
    if (set) this.#metaExport = undefined;
    // "This option MUST NOT be requested unless structured replies have been
    // negotiated first. If a client attempts to do so, a server SHOULD send NBD_REP_ERR_INVALID."
    if (!this.#structured) return this.#error(option, P.NBD_REP_ERR_INVALID, 'negotiate structured replies first');
    let req;
    try {
      req = decodeMetaContextOption(data);
    } catch (err) {
      return this.#error(option, P.NBD_REP_ERR_INVALID, err instanceof NbdDecodeError ? err.message : 'invalid option data');
    }
    if (!this.#options.exports.lookup(req.exportName)) {
      return this.#error(option, P.NBD_REP_ERR_UNKNOWN, `there is no export named '${req.exportName}'`);
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
      this.#host.send(encodeRepMetaContext(option, set ? BASE_ALLOCATION_ID : 0, P.BASE_ALLOCATION));
      if (set) this.#metaExport = req.exportName;
    }
    this.#host.send(encodeOptionReply(option, P.NBD_REP_ACK));
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

  #enter(exp: NbdExport, flags: number): void {
    // Block status only for the export the contexts were selected for.
    const meta = this.#metaExport !== undefined && this.#options.exports.lookup(this.#metaExport) === exp;
    this.#log.debug(`transmission: export '${exp.name}', flags 0x${flags.toString(16)}, structured ${this.#structured}`);
    this.#host.enterTransmission({
      export: exp,
      transmissionFlags: flags,
      structured: this.#structured,
      blockStatusContext: meta ? BASE_ALLOCATION_ID : undefined,
    });
  }
}
