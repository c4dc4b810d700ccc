// The payload client: one TLS-PSK session with the server that fetches the
// signed manifest, answers the server's questions while it waits, streams
// the kernel and initrd into temporary files and verifies them. Nothing is
// moved into place here; the caller does that with verified files only.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { FileSink, HashWorkerPool, PayloadVerifyError } from './file-sink';
import { readCappedBody } from '../payload/body';
import { decodeManifest, MANIFEST_MAX_BYTES, PAYLOAD_FILE_NAMES, type Manifest, type ManifestFile, type PayloadFileName } from '../payload/manifest';
import { API_PREFIX, MAX_QUESTION_WAIT_MS, SESSION_HEADER, type ErrorBody } from '../payload/protocol';
import { isValidQuestion, type Question, type QuestionAnswerer } from '../payload/questions';
import { pskClientOptions } from '../payload/tls';

export interface FetchPayloadOptions {
  /** Server address (link-local IPv6 with its zone, fe80::1%eth0, or IPv4). */
  address: string;
  port: number;
  psk: Buffer;
  /** The PSK identity: the shared secret's by default, a paired desktop's own (src/payload/pairing.ts). */
  pskIdentity?: string;
  manifestKey: Buffer;
  /** Directory for the temporary files (same file system as where they end up). */
  dir: string;
  maxFileBytes: number;
  answerer?: QuestionAnswerer;
  onProgress?: (progress: { received: number; total: number }) => void;
  /** Gives up connecting (not downloading) after this long; default 10 s. */
  connectTimeoutMs?: number;
  /** Gives up a download that receives nothing for this long; default 30 s. */
  stallTimeoutMs?: number;
  /** How long a failed question poll waits before the next; default 500 ms. */
  questionRetryMs?: number;
}

export interface FetchedPayload {
  manifest: Manifest;
  /** Verified temporary files, in `dir`. */
  paths: Record<PayloadFileName, string>;
  /** Bytes of kernel + initrd. */
  bytes: number;
  /** Deletes the temporary files (after they were moved, nothing happens). */
  discard(): Promise<void>;
}

export class PayloadError extends StiefelError {}

/** Small answers (errors, questions) are at most this long. */
const SMALL_BODY_BYTES = 16 * 1024;
/** The long poll asks for a little less than the server holds at most, so the server answers first. */
const QUESTION_POLL_MS = MAX_QUESTION_WAIT_MS - 5_000;
const RETRY_PAUSE_MS = 500;

/** What a failed connection or transfer means, in one line. */
export function explainNetworkError(err: unknown, where: string, handshakeDone: boolean): PayloadError {
  if (err instanceof StiefelError) return err as PayloadError;
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const text = `${e.code ?? ''} ${e.message ?? ''} ${e.reason ?? ''}`.toLowerCase();
  if (!handshakeDone && /alert|bad record mac|decrypt|handshake|psk/.test(text)) {
    return new PayloadError(
      'E_PAYLOAD_SECRET',
      `the TLS handshake with ${where} failed: the two machines hold different secrets (compare the secret files; copy the laptop's to the desktop image)`,
      { cause: err },
    );
  }
  if (/bad record mac|decryption failed|decrypt/.test(text)) {
    return new PayloadError('E_PAYLOAD_TAMPERED', `the connection to ${where} was tampered with or corrupted (a TLS record failed authentication); nothing was used`, { cause: err });
  }
  if (e.code === 'ECONNREFUSED') return new PayloadError('E_PAYLOAD_CONNECT', `${where} refused the payload connection: is 'stiefelctl server' running there?`, { cause: err });
  if (e.code === 'ETIMEDOUT' || e.code === 'E_CONNECT_TIMEOUT') return new PayloadError('E_PAYLOAD_CONNECT', `connecting to ${where} timed out`, { cause: err });
  if (e.code === 'ECONNRESET' || e.code === 'EPIPE' || /aborted|socket hang up|premature close/.test(text)) {
    return new PayloadError('E_PAYLOAD_BROKEN', `the connection to ${where} broke off`, { cause: err });
  }
  return new PayloadError('E_PAYLOAD_NETWORK', `the payload connection to ${where} failed: ${e.message ?? String(err)}`, { cause: err });
}

/** The HTTPS requests of one client session: one agent, one session id, the socket's last error kept. */
class PayloadConnection {
  readonly where: string;
  readonly session = randomBytes(16).toString('hex');
  /** Aborts every request of the session (the outer signal, or the end of the fetch). */
  readonly stop = new AbortController();
  #handshakeDone = false;
  /** A response body that stops early only says 'aborted'; the socket knows why (a TLS record that failed authentication, say). */
  #lastSocketError: Error | undefined;
  readonly #agent: Agent;
  readonly #options: FetchPayloadOptions;
  readonly #outer: AbortSignal;
  readonly #onOuterAbort = (): void => this.stop.abort(this.#outer.reason);

  constructor(options: FetchPayloadOptions, outer: AbortSignal) {
    this.#options = options;
    this.#outer = outer;
    this.where = `the server at ${options.address.includes(':') ? `[${options.address}]` : options.address}:${options.port}`;
    this.#agent = new Agent({ ...pskClientOptions(options.psk, options.pskIdentity), keepAlive: true, maxSockets: 2, maxCachedSessions: 0 });
    outer.addEventListener('abort', this.#onOuterAbort, { once: true });
  }

  get lastSocketError(): Error | undefined {
    return this.#lastSocketError;
  }

  request(method: string, path: string, body?: Buffer, signal: AbortSignal = this.stop.signal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          agent: this.#agent,
          host: this.#options.address,
          port: this.#options.port,
          method,
          path: `${API_PREFIX}${path}`,
          signal,
          headers: {
            host: 'stiefelsystem',
            [SESSION_HEADER]: this.session,
            ...(body ? { 'content-type': 'application/json', 'content-length': body.length } : {}),
          },
        },
        resolve,
      );
      const timer = setTimeout(() => req.destroy(Object.assign(new Error('connect timeout'), { code: 'E_CONNECT_TIMEOUT' })), this.#options.connectTimeoutMs ?? 10_000);
      req.once('socket', (socket) => {
        const connected = (): void => {
          this.#handshakeDone = true;
          clearTimeout(timer);
        };
        // A reused keep-alive socket finished its handshake long ago; the
        // timeout is for connecting only (a manifest may wait for a question).
        if (req.reusedSocket) connected();
        else socket.once('secureConnect', connected);
        if (!socket.listeners('error').some((l) => (l as { stiefel?: boolean }).stiefel)) {
          socket.on('error', Object.assign((err: Error) => (this.#lastSocketError = err), { stiefel: true }));
        }
        socket.once('close', () => clearTimeout(timer));
      });
      req.once('response', () => clearTimeout(timer));
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(signal.aborted && this.#outer.aborted ? new StiefelError('E_ABORTED', 'interrupted') : explainNetworkError(err, this.where, this.#handshakeDone));
      });
      req.end(body);
    });
  }

  readSmall(res: IncomingMessage, limit: number): Promise<Buffer> {
    return readCappedBody(res, limit, () => new PayloadError('E_PAYLOAD_PROTOCOL', `${this.where} sent an answer larger than ${limit} bytes`));
  }

  /** Turns a non-200 answer into the error the server described, in one line. */
  async failed(res: IncomingMessage, what: string): Promise<never> {
    const text = (await this.readSmall(res, SMALL_BODY_BYTES).catch(() => Buffer.alloc(0))).toString('utf8');
    let body: ErrorBody | undefined;
    try {
      body = JSON.parse(text) as ErrorBody;
    } catch {
      body = undefined;
    }
    const msg = typeof body?.message === 'string' ? body.message.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 400) : `HTTP ${res.statusCode}`;
    if (res.statusCode === 409 && body?.code === 'E_SERVER_BUSY') throw new PayloadError('E_SERVER_BUSY', `${this.where} refused this desktop: ${msg}`);
    throw new PayloadError(typeof body?.code === 'string' ? body.code : 'E_PAYLOAD_PROTOCOL', `${what} from ${this.where} failed: ${msg}`);
  }

  close(): void {
    this.stop.abort();
    this.#outer.removeEventListener('abort', this.#onOuterAbort);
    this.#agent.destroy();
  }
}

/** Waits `ms`, or less when `signal` aborts first. */
const pause = (ms: number, signal: AbortSignal): Promise<void> => sleep(ms, undefined, { signal }).catch(() => undefined);

/** The next question, or undefined when there is none yet (or the poll failed: the loop retries). */
async function nextQuestion(conn: PayloadConnection, retryMs: number, log: Logger): Promise<Question | undefined> {
  let res: IncomingMessage;
  try {
    res = await conn.request('GET', `/question?wait=${QUESTION_POLL_MS}`);
  } catch (err) {
    if (!conn.stop.signal.aborted) log.debug(`question poll failed: ${(err as Error).message}`);
    // The end of the session aborts the poll, and ends this pause at once.
    await pause(retryMs, conn.stop.signal);
    return undefined;
  }
  if (res.statusCode === 204) {
    res.resume();
    return undefined;
  }
  if (res.statusCode !== 200) {
    res.resume();
    log.debug(`question poll: HTTP ${res.statusCode}`);
    await pause(retryMs, conn.stop.signal);
    return undefined;
  }
  let q: unknown;
  try {
    q = JSON.parse((await conn.readSmall(res, SMALL_BODY_BYTES)).toString('utf8'));
  } catch {
    q = undefined;
  }
  if (isValidQuestion(q)) return q;
  log.warn('the server asked a malformed question; ignored');
  return undefined;
}

/** The answer to post: the person's, or a refusal saying why there is none. */
async function answerFor(q: Question, answerer: QuestionAnswerer | undefined, signal: AbortSignal): Promise<string> {
  if (!answerer) return JSON.stringify({ refused: 'this client cannot ask questions' });
  try {
    return JSON.stringify({ answer: await answerer.answer(q, { signal }) });
  } catch (err) {
    return JSON.stringify({ refused: (err as Error).message });
  }
}

/**
 * Answers the server's questions while the manifest request waits (the
 * server may need a passphrase before it can list the files), until the
 * session stops.
 */
async function answerQuestions(conn: PayloadConnection, options: FetchPayloadOptions, log: Logger): Promise<void> {
  while (!conn.stop.signal.aborted) {
    const q = await nextQuestion(conn, options.questionRetryMs ?? RETRY_PAUSE_MS, log);
    if (!q) continue;
    const body = await answerFor(q, options.answerer, conn.stop.signal);
    if (conn.stop.signal.aborted) return;
    const r = await conn.request('POST', `/answer/${q.id}`, Buffer.from(body)).catch((err: Error) => {
      log.debug(`posting an answer failed: ${err.message}`);
      return undefined;
    });
    r?.resume();
  }
}

/** The signed manifest, bound to a fresh nonce, with every file within the size limit. */
async function fetchManifest(conn: PayloadConnection, options: FetchPayloadOptions, log: Logger): Promise<Manifest> {
  const nonce = randomBytes(16).toString('hex');
  const res = await conn.request('GET', `/manifest?nonce=${nonce}`);
  if (res.statusCode !== 200) await conn.failed(res, 'the manifest request');
  const manifest = decodeManifest(await conn.readSmall(res, MANIFEST_MAX_BYTES), options.manifestKey, { nonce });
  for (const f of manifest.files) {
    if (f.size > options.maxFileBytes) {
      throw new PayloadError('E_PAYLOAD_SIZE', `the ${f.name} is ${f.size} bytes, more than client.max_file_bytes (${options.maxFileBytes}): refused`);
    }
  }
  log.debug(`manifest: ${manifest.files.map((f) => `${f.name} ${f.size} bytes in ${f.pieceSha256.length} pieces of ${f.pieceSize}`).join(', ')}`);
  return manifest;
}

function truncated(name: PayloadFileName, conn: PayloadConnection, received: number, size: number, cause?: unknown): PayloadVerifyError {
  return new PayloadVerifyError(
    'E_PAYLOAD_TRUNCATED',
    `the ${name} is truncated: the connection to ${conn.where} broke after ${received} of ${size} bytes; nothing was used`,
    { cause },
  );
}

/** Streams one file into its sink; a quiet server, a broken or short stream is an error naming it. */
async function downloadFile(conn: PayloadConnection, entry: ManifestFile, sink: FileSink, options: FetchPayloadOptions, onBytes: (n: number) => void): Promise<void> {
  const name = entry.name;
  const r = await conn.request('GET', `/files/${name}`);
  if (r.statusCode !== 200) await conn.failed(r, `the ${name} request`);
  const length = Number(r.headers['content-length']);
  if (length !== entry.size) {
    r.destroy();
    throw new PayloadVerifyError('E_PAYLOAD_SIZE', `${conn.where} announced ${length} bytes for the ${name}, but its manifest lists ${entry.size}: refused`);
  }
  // A server (or cable) that goes quiet must not leave the desktop waiting forever.
  const stallMs = options.stallTimeoutMs ?? 30_000;
  let stalled = false;
  const timer = setTimeout(() => {
    stalled = true;
    r.destroy(new Error('stalled'));
  }, stallMs);
  try {
    for await (const chunk of r as AsyncIterable<Buffer>) {
      timer.refresh();
      await sink.write(chunk);
      onBytes(chunk.length);
    }
  } catch (err) {
    if (err instanceof StiefelError) throw err;
    if (stalled) {
      throw new PayloadError('E_PAYLOAD_STALLED', `${conn.where} sent nothing for ${Math.round(stallMs / 1000)} s after ${sink.received} of ${entry.size} bytes of the ${name}; nothing was used`);
    }
    const why = explainNetworkError(conn.lastSocketError ?? err, conn.where, true);
    if (why.code === 'E_PAYLOAD_TAMPERED') throw why;
    throw truncated(name, conn, sink.received, entry.size, err);
  } finally {
    clearTimeout(timer);
  }
  if (!r.complete) throw truncated(name, conn, sink.received, entry.size);
  await sink.finish();
}

export async function fetchPayload(options: FetchPayloadOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<FetchedPayload> {
  const log = ctx.log;
  const conn = new PayloadConnection(options, ctx.signal);
  const temps: string[] = [];
  const discard = async (): Promise<void> => {
    await Promise.all(temps.map((p) => fs.rm(p, { force: true })));
  };
  // Verification workers start now, while the handshake and the manifest are under way.
  const pool = new HashWorkerPool();
  const questions = answerQuestions(conn, options, log).catch((err: Error) => log.debug(`question polling stopped: ${err.message}`));
  try {
    const manifest = await fetchManifest(conn, options, log);
    const total = manifest.files.reduce((a, f) => a + f.size, 0);
    let received = 0;
    const paths = {} as Record<PayloadFileName, string>;
    const tag = randomBytes(6).toString('hex');
    for (const name of PAYLOAD_FILE_NAMES) {
      const entry = manifest.files.find((f) => f.name === name)!;
      const path = join(options.dir, `.stiefel-${tag}-${name}.partial`);
      temps.push(path);
      const sink = await FileSink.create(path, name, entry, { pool });
      try {
        await downloadFile(conn, entry, sink, options, (n) => {
          received += n;
          options.onProgress?.({ received, total });
        });
      } catch (err) {
        await sink.abandon();
        throw err;
      }
      paths[name] = path;
    }
    conn.stop.abort();
    await questions;
    // The session's own signal is aborted by now; the goodbye gets one of its own.
    const done = await conn.request('POST', '/done', Buffer.from('{}'), new AbortController().signal);
    done.resume();
    return { manifest, paths, bytes: total, discard };
  } catch (err) {
    await discard();
    throw err;
  } finally {
    conn.close();
    await pool.close();
    await questions;
  }
}
