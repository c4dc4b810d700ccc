// The payload channel's HTTP requests (all inside TLS-PSK, port 4644):
//
//   GET  /v1/manifest?nonce=HEX32   signed manifest (see manifest.ts) bound to the nonce
//   GET  /v1/files/kernel           the kernel, exactly the manifest's size
//   GET  /v1/files/initrd           the initrd, likewise
//   GET  /v1/question?wait=MS       long poll: 200 + a Question as JSON, or 204
//   POST /v1/answer/ID              {"answer": "..."} or {"refused": "why"}
//   POST /v1/done                   the client verified everything; it now boots
//
// Every request carries the header `stiefel-session: HEX32`, a random id the
// client picks per run. Errors are JSON {"code": "...", "message": "..."}:
// 409 E_SERVER_BUSY when another desktop holds the server.

export const API_PREFIX = '/v1';
export const SESSION_HEADER = 'stiefel-session';
export const SESSION_PATTERN = /^[0-9a-f]{32}$/;
export const NONCE_PATTERN = /^[0-9a-f]{32}$/;
/** Longest long poll the server holds open. */
export const MAX_QUESTION_WAIT_MS = 30_000;
export const MAX_ANSWER_BODY = 8 * 1024;

export interface ErrorBody {
  code: string;
  message: string;
}
