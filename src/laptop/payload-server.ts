// The payload server: HTTPS over TLS 1.2 ECDHE-PSK, nothing else listening.
// Streams the kernel and initrd from their source with backpressure (memory
// stays bounded whatever their size), to one client host at a time. The
// requests are a table of routes (src/payload/protocol.ts lists them), each
// a small handler of one session.
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { AttachMode } from '../config/schema';
import { busyMessage, ClientLock, peerHost } from './client-lock';
import { readCappedBody } from '../payload/body';
import { encodeManifest, PAYLOAD_FILE_NAMES, type Manifest, type ManifestLink, type ManifestNbd, type PayloadFileName } from '../payload/manifest';
import {
  API_PREFIX,
  MAX_ANSWER_BODY,
  MAX_QUESTION_WAIT_MS,
  NONCE_PATTERN,
  SESSION_HEADER,
  SESSION_PATTERN,
  type ErrorBody,
} from '../payload/protocol';
import { passphraseProvider, QuestionChannel, QuestionError, MAX_ANSWER_LENGTH } from '../payload/questions';
import type { BootPayload, BootPayloadSource } from './payload-source';
import { firstAnswer, type PassphraseProvider } from '../disk/passphrase';
import { PAYLOAD_CIPHER, PSK_IDENTITY, pskServerOptions } from '../payload/tls';

/** The manifest key of each paired desktop's TLS connection (others use the shared secret's). */
const manifestKeys = new WeakMap<Socket, Buffer>();
import { WarningLimiter } from '../warning-limiter';

export interface PayloadServerOptions {
  /** TLS pre-shared key (HKDF "payloadPsk"). */
  psk: Buffer;
  /** Manifest signing key (HKDF "manifest"). */
  manifestKey: Buffer;
  /**
   * The keys of a desktop that paired with the console's code (it holds no
   * shared secret), by the PSK identity it names; undefined for any other.
   */
  pairedKeys?: (identity: string, host: string) => { psk: Buffer; manifestKey: Buffer } | undefined;
  port: number;
  /** Listen address; '::' (every interface, IPv4 too). */
  host?: string;
  serverName: string;
  source: BootPayloadSource;
  nbd: ManifestNbd;
  /** How the laptop OS's initramfs attaches the disk. */
  attach: AttachMode;
  /** Words added to the laptop OS's command line (config server.cmdline_append). */
  cmdlineAppend?: string;
  lock: ClientLock;
  /** Per-boot disk-link settings for a client (its WireGuard keys). */
  link?: (peer: { host: string; session: string }) => Promise<ManifestLink>;
  /** Asked together with the desktop for a LUKS passphrase (the laptop's console); the first answer wins. */
  consolePassphrase?: PassphraseProvider;
  /** How long a question waits for its answer; default 10 minutes. */
  questionTimeoutMs?: number;
  /** A download whose client reads nothing for this long is ended; default 60 s. */
  stallTimeoutMs?: number;
  now?: () => number;
}

export interface PayloadServer {
  readonly port: number;
  close(): Promise<void>;
}

export class HttpError extends StiefelError {
  readonly status: number;
  constructor(status: number, code: string, message: string) {
    super(code, message);
    this.status = status;
  }
}

/** One desktop's run of `stiefelctl client`, named by the id it sends with every request. */
interface Session {
  id: string;
  host: string;
  questions: QuestionChannel;
  abort: AbortController;
  payload?: Promise<BootPayload>;
}

/** The sessions of the server: at most the lock holder's are alive. */
class Sessions {
  readonly #sessions = new Map<string, Session>();
  readonly #lock: ClientLock;

  constructor(lock: ClientLock) {
    this.#lock = lock;
  }

  end(id: string, why: string): void {
    const s = this.#sessions.get(id);
    if (!s) return;
    this.#sessions.delete(id);
    s.abort.abort(new StiefelError('E_SESSION_ENDED', why));
    s.questions.close(new QuestionError(why));
  }

  /** The session `id` of `host`; a new one ends the sessions of hosts that no longer hold the lock. */
  of(id: string, host: string): Session {
    let s = this.#sessions.get(id);
    if (s && s.host !== host) throw new HttpError(409, 'E_SESSION', 'this session belongs to another host');
    if (!s) {
      for (const other of [...this.#sessions.values()]) if (this.#lock.busyFor(other.host)) this.end(other.id, 'another desktop took over');
      s = { id, host, questions: new QuestionChannel(), abort: new AbortController() };
      this.#sessions.set(id, s);
    }
    return s;
  }

  endAll(why: string): void {
    for (const id of [...this.#sessions.keys()]) this.end(id, why);
  }
}

/** What every handler gets: the request, its session, and the server's options and log. */
interface RequestContext {
  s: Session;
  url: URL;
  req: IncomingMessage;
  res: ServerResponse;
  /** The route pattern's captured groups. */
  params: string[];
  options: PayloadServerOptions;
  log: Logger;
  now: () => number;
}

interface Route {
  method: 'GET' | 'POST';
  /** Matched against the path after API_PREFIX. */
  path: RegExp;
  handle(ctx: RequestContext): Promise<void>;
}

/**
 * Waits until the response can take more. A client that reads nothing for
 * stallMs, or goes away, ends the transfer (it would otherwise hold the
 * laptop for itself forever).
 */
function drained(res: ServerResponse, stallMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      res.off('drain', onDrain);
      res.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(new Error('the client went away'));
    const timer = setTimeout(() => done(new Error(`the client read nothing for ${Math.round(stallMs / 1000)} s`)), stallMs);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendNoContent(res: ServerResponse): void {
  res.writeHead(204, { 'cache-control': 'no-store' });
  res.end();
}

function sendError(res: ServerResponse, err: HttpError): void {
  const body: ErrorBody = { code: err.code, message: err.message };
  if (!res.headersSent) sendJson(res, err.status, body);
  else res.destroy(err);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return readCappedBody(req, limit, () => new HttpError(413, 'E_TOO_LARGE', `request body larger than ${limit} bytes`));
}

/** The session's payload, resolved once (asking the desktop, and the console, for a passphrase if need be). */
function resolvePayload(ctx: RequestContext): Promise<BootPayload> {
  const { s, options } = ctx;
  if (!s.payload) {
    const asker = {
      ask: (q: Parameters<QuestionChannel['ask']>[0], o: Parameters<QuestionChannel['ask']>[1] = {}) =>
        s.questions.ask(q, { timeoutMs: options.questionTimeoutMs ?? 600_000, ...o }),
    };
    const desktop = passphraseProvider(asker);
    const passphrase = options.consolePassphrase ? firstAnswer([desktop, options.consolePassphrase]) : desktop;
    s.payload = options.source.resolve({ log: ctx.log.child('source'), signal: s.abort.signal, passphrase });
    // A failed resolution is retried by the next manifest request.
    s.payload.catch(() => (s.payload = undefined));
  }
  return s.payload;
}

async function serveManifest(ctx: RequestContext): Promise<void> {
  const { s, options, log } = ctx;
  const nonce = ctx.url.searchParams.get('nonce') ?? '';
  if (!NONCE_PATTERN.test(nonce)) throw new HttpError(400, 'E_REQUEST', 'nonce must be 32 lower-case hex digits');
  let payload: BootPayload;
  try {
    payload = await resolvePayload(ctx);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    log.warn(`cannot prepare the boot payload for ${s.host}: ${msg}`);
    throw new HttpError(503, err instanceof StiefelError ? err.code : 'E_PAYLOAD', `the laptop cannot prepare its boot payload: ${msg}`);
  }
  const link = (await options.link?.({ host: s.host, session: s.id })) ?? {};
  // The booted laptop OS may reach the disk from its tunnel address.
  if (link.wireguard) options.lock.expectDiskPeer(link.wireguard.clientAddress.replace(/\/\d+$/, ''));
  const manifest: Manifest = {
    version: 1,
    nonce,
    session: s.id,
    serverName: options.serverName,
    issuedAtMs: ctx.now(),
    family: payload.family,
    attach: options.attach,
    cmdline: [payload.cmdline, options.cmdlineAppend ?? ''].filter(Boolean).join(' '),
    files: PAYLOAD_FILE_NAMES.map((name) => {
      const f = payload.files[name];
      return { name, size: f.size, pieceSize: f.pieceSize, pieceSha256: f.pieceSha256 };
    }),
    nbd: options.nbd,
    link,
  };
  const body = encodeManifest(manifest, manifestKeys.get(ctx.req.socket) ?? options.manifestKey);
  ctx.res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length, 'cache-control': 'no-store' });
  ctx.res.end(body);
  const mb = (n: number): string => (n / 1e6).toFixed(1);
  log.info(`sending kernel (${mb(payload.files.kernel.size)} MB) and initrd (${mb(payload.files.initrd.size)} MB) to ${s.host}`);
}

async function serveFile(ctx: RequestContext): Promise<void> {
  const { s, res, log } = ctx;
  const name = ctx.params[0] as PayloadFileName;
  if (!s.payload) throw new HttpError(409, 'E_REQUEST', 'ask for the manifest first');
  const file = (await s.payload).files[name];
  let stream;
  try {
    stream = await file.open();
  } catch (err) {
    log.warn(`cannot send the ${name}: ${(err as Error).message}`);
    throw new HttpError(503, 'E_PAYLOAD_CHANGED', (err as Error).message);
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': file.size, 'cache-control': 'no-store' });
  let sent = 0;
  const started = ctx.now();
  const onClose = (): void => void stream.destroy();
  res.once('close', onClose);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const room = file.size - sent;
      const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
      sent += part.length;
      if (part.length > 0 && !res.write(part)) await drained(res, ctx.options.stallTimeoutMs ?? 60_000);
      if (sent >= file.size) break;
    }
  } catch (err) {
    if (res.destroyed) return;
    log.warn(`sending the ${name} to ${s.host} failed after ${sent} of ${file.size} bytes: ${(err as Error).message}`);
    res.destroy();
    return;
  } finally {
    res.off('close', onClose);
    stream.destroy();
  }
  if (sent !== file.size) {
    // Never end a response short of its length: the client must see a broken transfer.
    log.warn(`the ${name} ${file.describe} ended after ${sent} of ${file.size} bytes; connection to ${s.host} aborted`);
    res.destroy();
    return;
  }
  res.end();
  const secs = Math.max(1e-3, (ctx.now() - started) / 1000);
  log.debug(`sent the ${name} (${file.size} bytes) to ${s.host} in ${secs.toFixed(2)} s`);
}

async function serveQuestion(ctx: RequestContext): Promise<void> {
  const { s, req, res } = ctx;
  const wait = Math.min(MAX_QUESTION_WAIT_MS, Math.max(0, Number(ctx.url.searchParams.get('wait') ?? 0) || 0));
  const gone = new AbortController();
  const onClose = (): void => gone.abort();
  res.once('close', onClose);
  req.socket.once('close', onClose);
  try {
    const q = await s.questions.next(wait, gone.signal);
    if (res.destroyed) return;
    if (!q) return sendNoContent(res);
    ctx.log.debug(`asking ${s.host}: ${q.prompt}`);
    sendJson(res, 200, q);
  } finally {
    res.off('close', onClose);
    req.socket.off('close', onClose);
  }
}

async function serveAnswer(ctx: RequestContext): Promise<void> {
  const { s } = ctx;
  const id = ctx.params[0]!;
  let body: unknown;
  try {
    body = JSON.parse((await readBody(ctx.req, MAX_ANSWER_BODY)).toString('utf8'));
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw new HttpError(400, 'E_REQUEST', 'the answer is not JSON');
  }
  const b = body as { answer?: unknown; refused?: unknown };
  let ok: boolean;
  if (typeof b.answer === 'string' && b.answer.length <= MAX_ANSWER_LENGTH) ok = s.questions.answer(id, b.answer);
  else if (typeof b.refused === 'string') ok = s.questions.refuse(id, b.refused.slice(0, 200));
  else throw new HttpError(400, 'E_REQUEST', `an answer is {"answer": "..."} (at most ${MAX_ANSWER_LENGTH} characters) or {"refused": "why"}`);
  if (!ok) throw new HttpError(404, 'E_QUESTION', 'no such open question');
  sendNoContent(ctx.res);
}

async function serveDone(ctx: RequestContext): Promise<void> {
  await readBody(ctx.req, 1024);
  ctx.options.lock.handOff(ctx.s.host);
  ctx.log.info(`the desktop at ${ctx.s.host} verified its payload and boots it; waiting for its disk connection`);
  sendNoContent(ctx.res);
}

const ROUTES: readonly Route[] = [
  { method: 'GET', path: /^\/manifest$/, handle: serveManifest },
  { method: 'GET', path: new RegExp(`^/files/(${PAYLOAD_FILE_NAMES.join('|')})$`), handle: serveFile },
  { method: 'GET', path: /^\/question$/, handle: serveQuestion },
  { method: 'POST', path: /^\/answer\/([0-9a-f]{16,64})$/, handle: serveAnswer },
  { method: 'POST', path: /^\/done$/, handle: serveDone },
];

/** The route of a request, with its captured groups; undefined: no such request. */
export function routeOf(method: string, pathname: string): { route: Route; params: string[] } | undefined {
  if (!pathname.startsWith(`${API_PREFIX}/`)) return undefined;
  const rest = pathname.slice(API_PREFIX.length);
  for (const route of ROUTES) {
    const m = route.method === method ? route.path.exec(rest) : null;
    if (m) return { route, params: m.slice(1) };
  }
  return undefined;
}

/** Why a TLS handshake failed, in words a person can act on. */
export function tlsFailureReason(err: Error & { code?: string }): string {
  const text = `${err.code ?? ''} ${err.message}`;
  if (/bad record mac|decryption failed/i.test(text)) return 'the client holds a different secret';
  if (/no shared cipher|no suitable|unsupported protocol|version too low/i.test(text)) return `the client does not offer TLS 1.2 ${PAYLOAD_CIPHER}`;
  if (/wrong version number|http request|unknown protocol|unexpected eof|ECONNRESET/i.test(text)) return 'not a stiefelsystem TLS-PSK client';
  if (/psk identity/i.test(text)) return 'the client named an unknown key (another program, or another stiefelsystem version)';
  // OpenSSL's text is THREAD:error:CODE:LIBRARY:FUNCTION:REASON:FILE:LINE: only the reason is for people.
  const openssl = /:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+):/.exec(err.message);
  return openssl ? openssl[1]! : err.message.split('\n')[0]!;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const hint = err.code === 'EADDRINUSE' ? ': is another stiefelctl server running?' : '';
      reject(new StiefelError('E_PAYLOAD_LISTEN', `cannot listen for payload requests on TCP port ${port}: ${err.message}${hint}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ port, host }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export async function startPayloadServer(options: PayloadServerOptions, ctx: { log: Logger; signal?: AbortSignal }): Promise<PayloadServer> {
  const log = ctx.log;
  const now = options.now ?? Date.now;
  const sessions = new Sessions(options.lock);

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const host = peerHost(req.socket.remoteAddress);
    const url = new URL(req.url ?? '/', 'https://stiefelsystem');
    const id = String(req.headers[SESSION_HEADER] ?? '');
    if (!SESSION_PATTERN.test(id)) throw new HttpError(400, 'E_REQUEST', `missing or malformed ${SESSION_HEADER} header`);
    const decision = options.lock.beginRequest(host, id);
    if (!decision.ok) {
      log.warn(`refused the desktop at ${host}: busy with ${decision.owner.host}`);
      throw new HttpError(409, 'E_SERVER_BUSY', busyMessage(decision.owner));
    }
    res.once('close', () => options.lock.endRequest(host));
    if (decision.replacedSession) sessions.end(decision.replacedSession, 'the desktop started a new session');
    const s = sessions.of(id, host);
    const method = req.method ?? 'GET';
    const found = routeOf(method, url.pathname);
    if (!found) throw new HttpError(404, 'E_NOT_FOUND', `no such request: ${method} ${url.pathname}`);
    await found.route.handle({ s, url, req, res, params: found.params, options, log, now });
  };

  // A paired desktop's connection: its manifest is signed with its own key.
  const pskOf = (identity: string, socket: TLSSocket): Buffer | null => {
    if (identity === PSK_IDENTITY) return options.psk;
    const paired = options.pairedKeys?.(identity, peerHost(socket.remoteAddress));
    if (!paired) return null;
    manifestKeys.set(socket, paired.manifestKey);
    return paired.psk;
  };
  const server: Server = createServer(
    { ...pskServerOptions(pskOf), keepAlive: true, requestTimeout: 0, headersTimeout: 30_000 },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        if (err instanceof HttpError) return sendError(res, err);
        log.warn(`payload request ${req.method} ${req.url} failed: ${err instanceof Error ? err.message : String(err)}`);
        sendError(res, new HttpError(500, 'E_INTERNAL', 'internal error on the laptop; see its log'));
      });
    },
  );
  // TLS failures are where a client with another secret shows up.
  const warnings = new WarningLimiter({ now });
  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket | Socket) => {
    const from = peerHost(socket.remoteAddress);
    const reason = tlsFailureReason(err);
    for (const line of warnings.lines(`${from} ${reason}`, `refused a payload connection from ${from}: TLS handshake failed (${reason})`)) log.warn(line);
  });

  await listen(server, options.port, options.host ?? '::');
  server.on('error', (err) => log.warn(`payload server error: ${err.message}`));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  log.debug(`payload server listening on TCP port ${port} (TLS-PSK only)`);

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      sessions.endAll('the server is stopping');
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  ctx.signal?.addEventListener('abort', () => void close(), { once: true });
  return { port, close };
}
