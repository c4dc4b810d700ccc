// Wire constants of the NBD protocol, spelled as the spec spells them
// (NetworkBlockDevice/nbd, doc/proto.md, "Values"). Numbers only: no logic.

// --- Magic numbers -----------------------------------------------------------
/** 'NBDMAGIC', first 8 bytes the server sends (`INIT_PASSWD`). */
export const NBDMAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT', the newstyle magic; also prefixes every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Magic of every fixed-newstyle option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// --- Handshake flags (server, 16 bits) ---------------------------------------
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;

// --- Client flags (32 bits) --------------------------------------------------
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// --- Transmission flags (16 bits) --------------------------------------------
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// --- Options -----------------------------------------------------------------
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// --- Option reply types ------------------------------------------------------
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// --- NBD_REP_INFO information types ------------------------------------------
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// --- Commands ----------------------------------------------------------------
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// --- Command flags -----------------------------------------------------------
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// --- Structured replies ------------------------------------------------------
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// --- base:allocation status flags --------------------------------------------
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// --- Error values ("Error values") -------------------------------------------
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// --- Sizes -------------------------------------------------------------------
export const NBD_DEFAULT_PORT = 10809;
/** Bytes of a request header: magic, flags, type, handle, offset, length. */
export const NBD_REQUEST_SIZE = 28;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** Option header after IHAVEOPT: magic(8) option(4) length(4). */
export const NBD_OPTION_HEADER_SIZE = 16;
/** "MUST be no longer than 4096 bytes" (strings: export names, messages). */
export const NBD_MAX_STRING = 4096;
export const BASE_ALLOCATION = 'base:allocation';

const NAMES = {
  option: {
    [NBD_OPT_EXPORT_NAME]: 'NBD_OPT_EXPORT_NAME',
    [NBD_OPT_ABORT]: 'NBD_OPT_ABORT',
    [NBD_OPT_LIST]: 'NBD_OPT_LIST',
    [NBD_OPT_PEEK_EXPORT]: 'NBD_OPT_PEEK_EXPORT',
    [NBD_OPT_STARTTLS]: 'NBD_OPT_STARTTLS',
    [NBD_OPT_INFO]: 'NBD_OPT_INFO',
    [NBD_OPT_GO]: 'NBD_OPT_GO',
    [NBD_OPT_STRUCTURED_REPLY]: 'NBD_OPT_STRUCTURED_REPLY',
    [NBD_OPT_LIST_META_CONTEXT]: 'NBD_OPT_LIST_META_CONTEXT',
    [NBD_OPT_SET_META_CONTEXT]: 'NBD_OPT_SET_META_CONTEXT',
    [NBD_OPT_EXTENDED_HEADERS]: 'NBD_OPT_EXTENDED_HEADERS',
  } as Record<number, string>,
  command: {
    [NBD_CMD_READ]: 'NBD_CMD_READ',
    [NBD_CMD_WRITE]: 'NBD_CMD_WRITE',
    [NBD_CMD_DISC]: 'NBD_CMD_DISC',
    [NBD_CMD_FLUSH]: 'NBD_CMD_FLUSH',
    [NBD_CMD_TRIM]: 'NBD_CMD_TRIM',
    [NBD_CMD_CACHE]: 'NBD_CMD_CACHE',
    [NBD_CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
    [NBD_CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
  } as Record<number, string>,
};

/** `NBD_OPT_GO` for 7, `option 99` for an unknown one (for logs). */
export function optionName(option: number): string {
  return NAMES.option[option] ?? `option ${option}`;
}

export function commandName(type: number): string {
  return NAMES.command[type] ?? `command ${type}`;
}
