// The pairing exchange's wire format: how a desktop that holds no secret
// (it booted stiefelOS by PXE) and the laptop agree on this boot's secret
// from the code shown on the laptop's console. Plain HTTP with small JSON
// bodies: the PAKE (src/crypto/cpace.ts) protects itself, so nothing here
// needs TLS, and nothing here is secret.
//
//   desktop                                   laptop
//   POST /pxe/pair/start {sid, message, name}  ->  attempt, message
//   POST /pxe/pair/confirm {attempt, tag}      ->  tag, identity   (or 403: wrong code)
//
// The desktop's tag proves to the laptop that it typed the right code; the
// laptop's tag proves the same back. Afterwards the desktop speaks the usual
// payload protocol (TLS-PSK) with keys derived from the paired secret and
// `identity` as its PSK identity.

export const PAIRING_PATHS = Object.freeze({
  start: '/pxe/pair/start',
  confirm: '/pxe/pair/confirm',
});

/** A PSK identity of a paired desktop: this prefix and the attempt's id. */
export const PAIRED_IDENTITY_PREFIX = 'stiefelsystem-pair-v1:';

export const PAIRING_VERSION = 1;
/** Request bodies are a few hundred bytes; anything longer is refused unread. */
export const MAX_PAIRING_BODY = 1024;

const HEX16 = /^[0-9a-f]{32}$/;
const HEX32 = /^[0-9a-f]{64}$/;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export interface StartRequest {
  version: number;
  /** The CPace session id, 16 random bytes chosen by the desktop. */
  sid: Buffer;
  /** The desktop's CPace share Ya. */
  message: Buffer;
  /** The desktop's host name, shown on the laptop's console. */
  name: string;
}

export interface StartResponse {
  attempt: string;
  /** The laptop's CPace share Yb. */
  message: Buffer;
  serverName: string;
  /** Where the payload is served once paired. */
  payloadPort: number;
}

export interface ConfirmRequest {
  attempt: string;
  tag: Buffer;
}

export interface ConfirmResponse {
  tag: Buffer;
  identity: string;
}

export class PairingFormatError extends Error {}

function object(text: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new PairingFormatError('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PairingFormatError('not a JSON object');
  return v as Record<string, unknown>;
}

function hex(o: Record<string, unknown>, key: string, pattern: RegExp): Buffer {
  const v = o[key];
  if (typeof v !== 'string' || !pattern.test(v)) throw new PairingFormatError(`'${key}' is not ${pattern === HEX16 ? 16 : 32} bytes of lower-case hex`);
  return Buffer.from(v, 'hex');
}

function str(o: Record<string, unknown>, key: string, pattern: RegExp): string {
  const v = o[key];
  if (typeof v !== 'string' || !pattern.test(v)) throw new PairingFormatError(`'${key}' is missing or malformed`);
  return v;
}

export function encodeStartRequest(r: StartRequest): string {
  return JSON.stringify({ version: r.version, sid: r.sid.toString('hex'), message: r.message.toString('hex'), name: r.name });
}

export function decodeStartRequest(text: string): StartRequest {
  const o = object(text);
  if (o.version !== PAIRING_VERSION) throw new PairingFormatError(`version ${JSON.stringify(o.version)} is not ${PAIRING_VERSION}`);
  return { version: PAIRING_VERSION, sid: hex(o, 'sid', HEX16), message: hex(o, 'message', HEX32), name: str(o, 'name', NAME) };
}

export function encodeStartResponse(r: StartResponse): string {
  return JSON.stringify({ attempt: r.attempt, message: r.message.toString('hex'), serverName: r.serverName, payloadPort: r.payloadPort });
}

export function decodeStartResponse(text: string): StartResponse {
  const o = object(text);
  const port = o.payloadPort;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new PairingFormatError("'payloadPort' is not a port");
  return { attempt: str(o, 'attempt', HEX16), message: hex(o, 'message', HEX32), serverName: str(o, 'serverName', NAME), payloadPort: port };
}

export function encodeConfirmRequest(r: ConfirmRequest): string {
  return JSON.stringify({ attempt: r.attempt, tag: r.tag.toString('hex') });
}

export function decodeConfirmRequest(text: string): ConfirmRequest {
  const o = object(text);
  return { attempt: str(o, 'attempt', HEX16), tag: hex(o, 'tag', HEX32) };
}

export function encodeConfirmResponse(r: ConfirmResponse): string {
  return JSON.stringify({ tag: r.tag.toString('hex'), identity: r.identity });
}

export function decodeConfirmResponse(text: string): ConfirmResponse {
  const o = object(text);
  const identity = str(o, 'identity', /^stiefelsystem-pair-v1:[0-9a-f]{32}$/);
  return { tag: hex(o, 'tag', HEX32), identity };
}

