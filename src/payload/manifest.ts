// The payload manifest: what the server is about to send, signed.
//
// Pure codec. The envelope is JSON {"manifest": base64(JSON bytes), "hmac": hex}
// where hmac = HMAC-SHA256(manifest sub-key, JSON bytes). The manifest names
// the client's request nonce, so a manifest recorded once cannot be replayed
// to a later request, and lists the size of every file and the SHA-256
// digests of its pieces (pieces.ts): the client checks all of them before it
// uses a byte.
//
// The channel (TLS-PSK) already authenticates every byte; the signature makes
// the manifest verifiable on its own (it is what the client checks the files
// against, and it may be logged or kept).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { StiefelError } from '../errors';
import { ATTACH_MODES, INITRAMFS_FAMILIES, type AttachMode, type InitramfsFamily } from '../config/schema';
import { MAX_PIECES, MIN_PIECE_SIZE, pieceCount } from './pieces';
import type { WireGuardLink } from '../wireguard/link-settings';

export type { WireGuardLink };

export const MANIFEST_VERSION = 1;
/** Largest envelope a client reads. */
export const MANIFEST_MAX_BYTES = 256 * 1024;
export const PAYLOAD_FILE_NAMES = ['kernel', 'initrd'] as const;
export type PayloadFileName = (typeof PAYLOAD_FILE_NAMES)[number];

export interface ManifestFile {
  name: PayloadFileName;
  size: number;
  /** Bytes per piece (see pieces.ts). */
  pieceSize: number;
  /** SHA-256 of every piece in order, lower-case hex. */
  pieceSha256: string[];
}

/**
 * How the laptop OS on the desktop says goodbye as its last shutdown step
 * (the laptop returns to its own OS only after it): a per-boot token, sent
 * to `port` on the laptop's disk address. Carried to the laptop OS only in
 * the secrets cpio, like the WireGuard keys.
 */
export interface GoodbyeLink {
  token: string;
  port: number;
}

export interface ManifestLink {
  wireguard?: WireGuardLink;
  goodbye?: GoodbyeLink;
  /** The cable's MTU (link.mtu) when it is not 1500: the desktop sets it on its end. */
  mtu?: number;
}

export interface ManifestNbd {
  port: number;
  export: string;
  blockSize: number;
  connections?: number;
}

export interface Manifest {
  version: typeof MANIFEST_VERSION;
  /** The client's request nonce, hex: binds this manifest to one request. */
  nonce: string;
  /** The server's id for this client session, hex. */
  session: string;
  serverName: string;
  issuedAtMs: number;
  /** Initramfs family of the laptop OS (decides the command line form). */
  family: InitramfsFamily;
  /** How the laptop OS's initramfs attaches the disk (decides the parameters it gets). */
  attach: AttachMode;
  /** The laptop OS's own command line. */
  cmdline: string;
  files: ManifestFile[];
  /**
   * blockSize: the disk's logical block size, which its partition table
   * counts in; connections: how many the desktop opens (server.nbd.connections,
   * omitted for one).
   */
  nbd: ManifestNbd;
  link: ManifestLink;
}

export class ManifestError extends StiefelError {
  constructor(message: string) {
    super('E_MANIFEST', message);
  }
}

function sign(key: Uint8Array, bytes: Uint8Array): Buffer {
  return createHmac('sha256', key).update(bytes).digest();
}

export function encodeManifest(manifest: Manifest, key: Uint8Array): Buffer {
  validateManifest(manifest);
  const bytes = Buffer.from(JSON.stringify(manifest), 'utf8');
  return Buffer.from(JSON.stringify({ manifest: bytes.toString('base64'), hmac: sign(key, bytes).toString('hex') }), 'utf8');
}

const HEX = (n: number): RegExp => new RegExp(`^[0-9a-f]{${n}}$`);
const B64_KEY = /^[A-Za-z0-9+/]{43}=$/;

function fail(what: string): never {
  throw new ManifestError(`the server's manifest is invalid: ${what}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(o: Record<string, unknown>, allowed: string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(`unknown field ${where}${k}`);
}

function safeInt(v: unknown, min: number, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) fail(`${what} must be an integer from ${min} to ${max}`);
  return v;
}

function str(v: unknown, pattern: RegExp, what: string): string {
  if (typeof v !== 'string' || !pattern.test(v)) fail(`${what} is missing or malformed`);
  return v;
}

/** Structural check of a manifest object; throws ManifestError. */
export function validateManifest(m: unknown): Manifest {
  if (!isObject(m)) fail('not an object');
  checkKeys(m, ['version', 'nonce', 'session', 'serverName', 'issuedAtMs', 'family', 'attach', 'cmdline', 'files', 'nbd', 'link'], '');
  if (m.version !== MANIFEST_VERSION) fail(`version ${String(m.version)} is not ${MANIFEST_VERSION}: update stiefelsystem on both machines`);
  str(m.nonce, HEX(32), 'nonce');
  str(m.session, HEX(32), 'session');
  str(m.serverName, /^[^\x00-\x1f\x7f]{0,64}$/, 'serverName');
  safeInt(m.issuedAtMs, 0, Number.MAX_SAFE_INTEGER, 'issuedAtMs');
  if (typeof m.family !== 'string' || !(INITRAMFS_FAMILIES as readonly string[]).includes(m.family)) {
    fail(`family must be one of ${INITRAMFS_FAMILIES.join(', ')}`);
  }
  if (typeof m.attach !== 'string' || !(ATTACH_MODES as readonly string[]).includes(m.attach)) fail(`attach must be one of ${ATTACH_MODES.join(', ')}`);
  str(m.cmdline, /^[^\x00-\x1f\x7f]{0,4096}$/, 'cmdline');
  if (!Array.isArray(m.files) || m.files.length !== PAYLOAD_FILE_NAMES.length) fail('files must list kernel and initrd');
  const names = new Set<string>();
  for (const f of m.files as unknown[]) {
    if (!isObject(f)) fail('a file entry is not an object');
    checkKeys(f, ['name', 'size', 'pieceSize', 'pieceSha256'], 'files[].');
    if (typeof f.name !== 'string' || !(PAYLOAD_FILE_NAMES as readonly string[]).includes(f.name) || names.has(f.name)) {
      fail('files must list kernel and initrd once each');
    }
    names.add(f.name);
    const size = safeInt(f.size, 0, Number.MAX_SAFE_INTEGER, `the size of ${f.name}`);
    const pieceSize = safeInt(f.pieceSize, MIN_PIECE_SIZE, 2 ** 40, `the piece size of ${f.name}`);
    if (!Number.isInteger(Math.log2(pieceSize))) fail(`the piece size of ${f.name} must be a power of two`);
    const n = pieceCount(size, pieceSize);
    if (n > MAX_PIECES) fail(`the ${f.name} has more than ${MAX_PIECES} pieces`);
    if (!Array.isArray(f.pieceSha256) || f.pieceSha256.length !== n) fail(`the ${f.name} must list ${n} piece digests`);
    for (const d of f.pieceSha256 as unknown[]) str(d, HEX(64), `a piece sha256 of ${f.name}`);
  }
  if (!isObject(m.nbd)) fail('nbd is missing');
  checkKeys(m.nbd, ['port', 'export', 'blockSize', 'connections'], 'nbd.');
  safeInt(m.nbd.port, 1, 65535, 'nbd.port');
  if (m.nbd.connections !== undefined) safeInt(m.nbd.connections, 1, 8, 'nbd.connections');
  const blockSize = safeInt(m.nbd.blockSize, 512, 65536, 'nbd.blockSize');
  if (!Number.isInteger(Math.log2(blockSize))) fail('nbd.blockSize must be a power of two');
  str(m.nbd.export, /^[A-Za-z0-9_.:+-]{1,64}$/, 'nbd.export');
  if (!isObject(m.link)) fail('link is missing');
  checkKeys(m.link, ['wireguard', 'goodbye', 'mtu'], 'link.');
  if (m.link.mtu !== undefined) safeInt(m.link.mtu, 1280, 9000, 'link.mtu');
  if (m.link.goodbye !== undefined) {
    const g = m.link.goodbye;
    if (!isObject(g)) fail('link.goodbye is not an object');
    checkKeys(g, ['token', 'port'], 'link.goodbye.');
    str(g.token, HEX(64), 'link.goodbye.token');
    safeInt(g.port, 1, 65535, 'link.goodbye.port');
  }
  if (m.link.wireguard !== undefined) {
    const w = m.link.wireguard;
    if (!isObject(w)) fail('link.wireguard is not an object');
    checkKeys(w, ['clientPrivateKey', 'clientAddress', 'serverPublicKey', 'serverAddress', 'serverPort'], 'link.wireguard.');
    str(w.clientPrivateKey, B64_KEY, 'link.wireguard.clientPrivateKey');
    str(w.serverPublicKey, B64_KEY, 'link.wireguard.serverPublicKey');
    str(w.clientAddress, /^[0-9A-Fa-f.:]+\/\d{1,3}$/, 'link.wireguard.clientAddress');
    str(w.serverAddress, /^[0-9A-Fa-f.:]+$/, 'link.wireguard.serverAddress');
    safeInt(w.serverPort, 1, 65535, 'link.wireguard.serverPort');
  }
  return m as unknown as Manifest;
}

/**
 * Verifies the envelope's signature, then the manifest's shape, then that it
 * answers our request (`nonce`, hex). Throws ManifestError with one line.
 */
export function decodeManifest(envelope: Uint8Array, key: Uint8Array, expected: { nonce: string }): Manifest {
  if (envelope.length > MANIFEST_MAX_BYTES) throw new ManifestError(`the server's manifest is larger than ${MANIFEST_MAX_BYTES} bytes`);
  let outer: unknown;
  try {
    outer = JSON.parse(Buffer.from(envelope).toString('utf8'));
  } catch {
    throw new ManifestError("the server's manifest is not valid JSON");
  }
  if (!isObject(outer) || typeof outer.manifest !== 'string' || typeof outer.hmac !== 'string' || !HEX(64).test(outer.hmac)) {
    throw new ManifestError("the server's manifest envelope is malformed");
  }
  const bytes = Buffer.from(outer.manifest, 'base64');
  if (bytes.toString('base64') !== outer.manifest) throw new ManifestError("the server's manifest is not valid base64");
  if (!timingSafeEqual(sign(key, bytes), Buffer.from(outer.hmac, 'hex'))) {
    throw new ManifestError("the server's manifest signature does not match: it was tampered with, or signed with another secret");
  }
  let inner: unknown;
  try {
    inner = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ManifestError("the server's manifest is not valid JSON");
  }
  const m = validateManifest(inner);
  if (m.nonce !== expected.nonce) {
    throw new ManifestError("the server's manifest answers another request (replayed?): refused");
  }
  return m;
}
