// The payload client: one TLS-PSK session with the server that fetches the
// signed manifest, answers the server's questions while it waits, streams
// the kernel and initrd into temporary files and verifies them. Nothing is
// moved into place here; the caller does that with verified files only.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { FileSink, HashWorkerPool, PayloadVerifyError } from './file-sink';
import { decodeManifest, MANIFEST_MAX_BYTES, PAYLOAD_FILE_NAMES, type Manifest, type PayloadFileName } from '../payload/manifest';
import { API_PREFIX, SESSION_HEADER, type ErrorBody } from '../payload/protocol';
import { isValidQuestion, type QuestionAnswerer } from '../payload/questions';
import { pskClientOptions } from '../payload/tls';

export interface FetchPayloadOptions {
  /** Server address (link-local IPv6 with its zone, fe80::1%eth0, or IPv4). */
  address: string;
  port: number;
  psk: Buffer;
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

export async function fetchPayload(options: FetchPayloadOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<FetchedPayload> {
  const log = ctx.log;
  const where = `the server at ${options.address.includes(':') ? `[${options.address}]` : options.address}:${options.port}`;
  const session = randomBytes(16).toString('hex');
  const nonce = randomBytes(16).toString('hex');
  let handshakeDone = false;
  // A response body that stops early only says 'aborted'; the socket knows why (a TLS record that failed authentication, say).
  let lastSocketError: Error | undefined;
  const agent = new Agent({
    ...pskClientOptions(options.psk),
    keepAlive: true,
    maxSockets: 2,
    maxCachedSessions: 0,
  });
  const stop = new AbortController();
  const onOuterAbort = (): void => stop.abort(ctx.signal.reason);
  ctx.signal.addEventListener('abort', onOuterAbort, { once: true });
  const temps: string[] = [];

  const request = (method: string, path: string, body?: Buffer, signal: AbortSignal = stop.signal): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          agent,
          host: options.address,
          port: options.port,
          method,
          path,
          signal,
          headers: {
            host: 'stiefelsystem',
            [SESSION_HEADER]: session,
            ...(body ? { 'content-type': 'application/json', 'content-length': body.length } : {}),
          },
        },
        resolve,
      );
      const timer = setTimeout(() => {
        const err = Object.assign(new Error('connect timeout'), { code: 'E_CONNECT_TIMEOUT' });
        req.destroy(err);
      }, options.connectTimeoutMs ?? 10_000);
      req.once('socket', (socket) => {
        const connected = (): void => {
          handshakeDone = true;
          clearTimeout(timer);
        };
        // A reused keep-alive socket finished its handshake long ago; the
        // timeout is for connecting only (a manifest may wait for a question).
        if (req.reusedSocket) connected();
        else socket.once('secureConnect', connected);
        if (!socket.listeners('error').some((l) => (l as { stiefel?: boolean }).stiefel)) {
          const onError = Object.assign((err: Error) => (lastSocketError = err), { stiefel: true });
          socket.on('error', onError);
        }
        socket.once('close', () => clearTimeout(timer));
      });
      req.once('response', () => clearTimeout(timer));
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(signal.aborted && ctx.signal.aborted ? new StiefelError('E_ABORTED', 'interrupted') : explainNetworkError(err, where, handshakeDone));
      });
      req.end(body);
    });

  const readSmall = async (res: IncomingMessage, limit: number): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) throw new PayloadError('E_PAYLOAD_PROTOCOL', `${where} sent an answer larger than ${limit} bytes`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks);
  };

  const failed = async (res: IncomingMessage, what: string): Promise<never> => {
    const text = (await readSmall(res, 16 * 1024).catch(() => Buffer.alloc(0))).toString('utf8');
    let body: ErrorBody | undefined;
    try {
      body = JSON.parse(text) as ErrorBody;
    } catch {
      body = undefined;
    }
    const msg = typeof body?.message === 'string' ? body.message.replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 400) : `HTTP ${res.statusCode}`;
    if (res.statusCode === 409 && body?.code === 'E_SERVER_BUSY') throw new PayloadError('E_SERVER_BUSY', `${where} refused this desktop: ${msg}`);
    throw new PayloadError(typeof body?.code === 'string' ? body.code : 'E_PAYLOAD_PROTOCOL', `${what} from ${where} failed: ${msg}`);
  };

  // Questions are answered while the manifest request waits (the server may
  // need a passphrase before it can list the files).
  const pollQuestions = async (): Promise<void> => {
    while (!stop.signal.aborted) {
      let res: IncomingMessage;
      try {
        res = await request('GET', `${API_PREFIX}/question?wait=25000`);
      } catch (err) {
        if (stop.signal.aborted) return;
        log.debug(`question poll failed: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      if (res.statusCode === 204) {
        res.resume();
        continue;
      }
      if (res.statusCode !== 200) {
        res.resume();
        log.debug(`question poll: HTTP ${res.statusCode}`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      let q: unknown;
      try {
        q = JSON.parse((await readSmall(res, 16 * 1024)).toString('utf8'));
      } catch {
        q = undefined;
      }
      if (!isValidQuestion(q)) {
        log.warn('the server asked a malformed question; ignored');
        continue;
      }
      let body: string;
      if (!options.answerer) {
        body = JSON.stringify({ refused: 'this client cannot ask questions' });
      } else {
        try {
          body = JSON.stringify({ answer: await options.answerer.answer(q, { signal: stop.signal }) });
        } catch (err) {
          if (stop.signal.aborted) return;
          body = JSON.stringify({ refused: (err as Error).message });
        }
      }
      const r = await request('POST', `${API_PREFIX}/answer/${q.id}`, Buffer.from(body)).catch((err: Error) => {
        log.debug(`posting an answer failed: ${err.message}`);
        return undefined;
      });
      r?.resume();
    }
  };

  let poller: Promise<void> | undefined;
  // Verification workers start now, while the handshake and the manifest are under way.
  const pool = new HashWorkerPool();
  try {
    poller = pollQuestions().catch((err: Error) => log.debug(`question polling stopped: ${err.message}`));
    const res = await request('GET', `${API_PREFIX}/manifest?nonce=${nonce}`);
    if (res.statusCode !== 200) await failed(res, 'the manifest request');
    const manifest = decodeManifest(await readSmall(res, MANIFEST_MAX_BYTES), options.manifestKey, { nonce });
    const total = manifest.files.reduce((a, f) => a + f.size, 0);
    for (const f of manifest.files) {
      if (f.size > options.maxFileBytes) {
        throw new PayloadError('E_PAYLOAD_SIZE', `the ${f.name} is ${f.size} bytes, more than client.max_file_bytes (${options.maxFileBytes}): refused`);
      }
    }
    log.debug(`manifest: ${manifest.files.map((f) => `${f.name} ${f.size} bytes in ${f.pieceSha256.length} pieces of ${f.pieceSize}`).join(', ')}`);

    let received = 0;
    const paths = {} as Record<PayloadFileName, string>;
    const tag = randomBytes(6).toString('hex');
    for (const name of PAYLOAD_FILE_NAMES) {
      const entry = manifest.files.find((f) => f.name === name)!;
      const path = join(options.dir, `.stiefel-${tag}-${name}.partial`);
      temps.push(path);
      const sink = await FileSink.create(path, name, entry, { pool });
      try {
        const r = await request('GET', `${API_PREFIX}/files/${name}`);
        if (r.statusCode !== 200) await failed(r, `the ${name} request`);
        const length = Number(r.headers['content-length']);
        if (length !== entry.size) {
          r.destroy();
          throw new PayloadVerifyError('E_PAYLOAD_SIZE', `${where} announced ${length} bytes for the ${name}, but its manifest lists ${entry.size}: refused`);
        }
        // A server (or cable) that goes quiet must not leave the desktop waiting forever.
        const stallMs = options.stallTimeoutMs ?? 30_000;
        let stalled = false;
        const timer = setTimeout(function stall() {
          stalled = true;
          r.destroy(new Error('stalled'));
        }, stallMs);
        try {
          for await (const chunk of r as AsyncIterable<Buffer>) {
            timer.refresh();
            await sink.write(chunk);
            received += chunk.length;
            options.onProgress?.({ received, total });
          }
        } catch (err) {
          if (err instanceof StiefelError) throw err;
          if (stalled) {
            throw new PayloadError('E_PAYLOAD_STALLED', `${where} sent nothing for ${Math.round(stallMs / 1000)} s after ${sink.received} of ${entry.size} bytes of the ${name}; nothing was used`);
          }
          const why = explainNetworkError(lastSocketError ?? err, where, true);
          if (why.code === 'E_PAYLOAD_TAMPERED') throw why;
          throw new PayloadVerifyError(
            'E_PAYLOAD_TRUNCATED',
            `the ${name} is truncated: the connection to ${where} broke after ${sink.received} of ${entry.size} bytes; nothing was used`,
            { cause: err },
          );
        } finally {
          clearTimeout(timer);
        }
        if (!r.complete) {
          throw new PayloadVerifyError(
            'E_PAYLOAD_TRUNCATED',
            `the ${name} is truncated: the connection to ${where} broke after ${sink.received} of ${entry.size} bytes; nothing was used`,
          );
        }
        await sink.finish();
      } catch (err) {
        await sink.abandon();
        throw err;
      }
      paths[name] = path;
    }
    stop.abort();
    await poller.catch(() => undefined);
    const done = await request('POST', `${API_PREFIX}/done`, Buffer.from('{}'), new AbortController().signal);
    done.resume();
    return {
      manifest,
      paths,
      bytes: total,
      discard: async () => {
        await Promise.all(temps.map((p) => fs.rm(p, { force: true })));
      },
    };
  } catch (err) {
    await Promise.all(temps.map((p) => fs.rm(p, { force: true })));
    throw err;
  } finally {
    stop.abort();
    await pool.close();
    await poller?.catch(() => undefined);
    ctx.signal.removeEventListener('abort', onOuterAbort);
    agent.destroy();
  }
}
