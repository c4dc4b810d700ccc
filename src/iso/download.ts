// Downloading a distribution's ISO into a file (in stiefelOS on a tmpfs: the
// RAM that later holds it across kexec). The bytes are streamed to disk and
// hashed as they are written, never held in memory; a dropped connection is
// resumed with Range and If-Range; when anything fails nothing is left at
// dest or dest.partial. Whether the bytes are an ISO is the caller's question.
import { createHash, type Hash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, STATUS_CODES } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootCertificates } from 'node:tls';
import { describeErrno, errnoCode, isErrnoException, StiefelError, UsageError } from '../errors';
import type { Logger } from '../log';
import { VERSION } from '../version';

export interface DownloadOptions {
  /** http: or https: */
  url: string;
  /** The file to write; written as dest + '.partial' and renamed when complete and checked. */
  dest: string;
  /** 64 hex digits; required for http:. */
  sha256?: string;
  /** What the RAM allows: refused early by Content-Length, stopped when exceeded. */
  maxBytes: number;
  onProgress?: (p: { received: number; total: number | undefined }) => void;
  /** Reconnections in a row that bring no new byte before giving up (default 5). */
  retries?: number;
  /** No byte for this long counts as a dropped connection (default 30 s). */
  stallTimeoutMs?: number;
  signal?: AbortSignal;
  /** A CA trusted in addition to the default roots (tests). */
  ca?: string | Buffer;
  /** A checksum list or its signature: proven by the signature, so plain HTTP needs no sha256. */
  signed?: boolean;
  /** dest is a block device (the RAM set aside for the ISO, /dev/pmem0): written from its start, never created, truncated, renamed or removed. */
  inPlace?: boolean;
}

export interface Downloaded {
  path: string;
  bytes: number;
  /** SHA-256 of the whole file, hex. */
  sha256: string;
  /** How many times a dropped download went on where it broke off. */
  resumed: number;
  seconds: number;
}

export class IsoDownloadError extends StiefelError {}

const MAX_REDIRECTS = 5;
const DEFAULT_RETRIES = 5;
const DEFAULT_STALL_MS = 30_000;
/** The pause before a reconnection doubles with each one that brought nothing, up to the maximum. */
const RETRY_PAUSE_MS = 250;
const MAX_RETRY_PAUSE_MS = 4_000;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Gateways and servers that say they are briefly unavailable; worth another try. */
const TRANSIENT_STATUSES = new Set([502, 503, 504]);
/** Connection failures worth another try; anything else (a name that does not resolve, an untrusted certificate) is not. */
const TRANSIENT_ERRNOS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENETUNREACH', 'EHOSTUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ECONNABORTED']);
const TLS_TRUST_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|ERR_TLS/;

/** A connection that broke or went quiet: the loop in downloadIso may reconnect. */
class Dropped extends Error {
  constructor(
    message: string,
    readonly stalled: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The URL in messages: without user name or password. */
function shown(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}${url.search}`;
}

function statusText(code: number): string {
  return `${code} ${STATUS_CODES[code] ?? ''}`.trim();
}

interface Checked {
  url: URL;
  sha256: string | undefined;
}

/** The user's options, or a UsageError naming the one that is wrong. Nothing is requested before this. */
function checkOptions(o: DownloadOptions): Checked {
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new UsageError(`'${o.url}' is not a URL: give one like https://host/path/image.iso`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`${url.protocol} URLs cannot be downloaded: give an http: or https: URL, or a file`);
  }
  const sha256 = o.sha256?.trim().toLowerCase();
  if (sha256 !== undefined && !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new UsageError(`--sha256 wants 64 hexadecimal digits (as sha256sum prints them), not '${o.sha256}'`);
  }
  if (url.protocol === 'http:' && sha256 === undefined && !o.signed) {
    throw new UsageError('an ISO over plain HTTP needs --sha256 HEX (nothing else proves it is the one you meant)');
  }
  if (!(o.maxBytes > 0)) throw new UsageError(`there is no room for an ISO (maxBytes ${o.maxBytes})`);
  return { url, sha256 };
}

/** What identifies the representation, so that a resume does not splice two different files. */
interface Validators {
  etag: string | undefined;
  lastModified: string | undefined;
  /** RFC 9110 §8.8.2.2: a Last-Modified at least one second before the response's Date is strong. */
  dateIsStrong: boolean;
}

function validatorsOf(res: IncomingMessage): Validators {
  const etag = res.headers.etag;
  const lastModified = res.headers['last-modified'];
  const lm = lastModified ? Date.parse(lastModified) : NaN;
  const date = res.headers.date ? Date.parse(res.headers.date) : NaN;
  return { etag, lastModified, dateIsStrong: date - lm >= 1000 };
}

function ifRangeOf(v: Validators): string | undefined {
  // RFC 9110 §13.1.5: "A client MUST NOT generate an If-Range header field
  // containing an entity tag that is marked as weak", nor "an HTTP-date
  // unless the client has no entity tag for the corresponding representation
  // and the date is a strong validator".
  if (v.etag) return v.etag.startsWith('W/') ? undefined : v.etag;
  return v.lastModified && v.dateIsStrong ? v.lastModified : undefined;
}

/** Whether a 206 is a part of the representation the earlier bytes came from. */
function sameRepresentation(before: Validators, now: Validators): boolean {
  if (before.etag !== undefined || now.etag !== undefined) return before.etag === now.etag;
  return before.lastModified === now.lastModified;
}

/** Content-Range of a 206 (RFC 9110 §14.4): `bytes first-last/complete`, complete may be `*`. */
function parseContentRange(value: string | undefined): { first: number; last: number; complete: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = Number(m[2]);
  const complete = m[3] === '*' ? undefined : Number(m[3]);
  if (last < first || (complete !== undefined && last >= complete)) return undefined;
  return { first, last, complete };
}

function contentLength(res: IncomingMessage): number | undefined {
  const v = res.headers['content-length'];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** The file being written: its handle, how far it is, the hash of what it holds. */
class PartialFile {
  position = 0;
  #hash: Hash = createHash('sha256');

  private constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly inPlace: boolean,
  ) {}

  static async create(path: string, inPlace = false): Promise<PartialFile> {
    try {
      return new PartialFile(path, await fs.open(path, inPlace ? 'r+' : 'w', 0o600), inPlace);
    } catch (err) {
      throw new IsoDownloadError('E_ISO_WRITE', `cannot write ${path}: ${isErrnoException(err) ? describeErrno(err) : String(err)}`, { cause: err });
    }
  }

  /** Appends and hashes one chunk; the caller waits, so the socket is not read faster than the disk takes it. */
  async append(chunk: Buffer): Promise<void> {
    let done = 0;
    try {
      while (done < chunk.length) {
        const { bytesWritten } = await this.fh.write(chunk, done, chunk.length - done, this.position + done);
        done += bytesWritten;
      }
    } catch (err) {
      // On stiefelOS's tmpfs, ENOSPC means the RAM is full.
      const fix = errnoCode(err) === 'ENOSPC' ? ': free memory or choose a smaller image' : '';
      throw new IsoDownloadError('E_ISO_WRITE', `writing ${this.path} failed after ${this.position} bytes: ${isErrnoException(err) ? describeErrno(err) : String(err)}${fix}`, { cause: err });
    }
    this.#hash.update(chunk);
    this.position += chunk.length;
  }

  /** Back to an empty file and a fresh hash: the server sends the file from its start. */
  async restart(): Promise<void> {
    if (!this.inPlace) await this.fh.truncate(0);
    this.#hash = createHash('sha256');
    this.position = 0;
  }

  digest(): string {
    return this.#hash.digest('hex');
  }
}

/** One download: its options, the file, what the server said about the representation. */
class Transfer {
  readonly url: URL;
  readonly sha256: string | undefined;
  readonly stallMs: number;
  /** Where the last redirects led; resumes go there (a mirror chosen by a redirector keeps its own file). */
  resolved: URL | undefined;
  /** The complete length, when the server said it. */
  total: number | undefined;
  validators: Validators | undefined;
  /** The most bytes the file ever held, to tell a reconnection that brought something from one that did not. */
  highWater = 0;
  resumed = 0;
  #firstByteSeen = false;

  constructor(
    readonly o: DownloadOptions,
    checked: Checked,
    readonly file: PartialFile,
    readonly log: Logger,
  ) {
    this.url = checked.url;
    this.sha256 = checked.sha256;
    this.stallMs = o.stallTimeoutMs ?? DEFAULT_STALL_MS;
  }

  get where(): string {
    return `the server at ${(this.resolved ?? this.url).host}`;
  }

  get of(): string {
    return this.total === undefined ? `${this.file.position} bytes` : `${this.file.position} of ${this.total} bytes`;
  }

  /** One request and its body; a Dropped when the connection breaks, another error when it is no use trying again. */
  async attempt(): Promise<'done' | 'again'> {
    const resuming = this.file.position > 0;
    const headers: OutgoingHttpHeaders = { 'user-agent': `stiefelctl/${VERSION}`, accept: '*/*' };
    if (resuming) {
      headers.range = `bytes=${this.file.position}-`;
      const ifRange = this.validators && ifRangeOf(this.validators);
      if (ifRange) headers['if-range'] = ifRange;
    }
    const stall = new StallTimer(this.stallMs);
    try {
      const res = await this.#openFollowingRedirects(headers, stall);
      const status = res.statusCode ?? 0;
      if (status === 200) await this.#whole(res, resuming && headers['if-range'] !== undefined);
      else if (status === 206) {
        if ((await this.#part(res)) === 'again') return 'again';
      } else {
        res.destroy();
        this.#refuse(status, resuming);
      }
      await this.#receive(res, stall);
      return 'done';
    } catch (err) {
      throw this.#explain(err, stall);
    } finally {
      stall.stop();
    }
  }

  /** A 200: the whole file, from its start, whatever was asked. */
  async #whole(res: IncomingMessage, ifRangeSent: boolean): Promise<void> {
    if (this.file.position > 0) {
      const why = ifRangeSent && this.validators && !sameRepresentation(this.validators, validatorsOf(res)) ? 'the file changed on the server' : 'the server does not resume downloads';
      this.log.warn(`${why}: starting again from byte 0, not ${this.file.position}`);
      await this.#restart();
    }
    this.#begin(res, contentLength(res));
  }

  /** A 206: the rest of the same file from where it broke off, or 'again' from byte 0 when it is not. */
  async #part(res: IncomingMessage): Promise<'go on' | 'again'> {
    const resuming = this.file.position > 0;
    const range = parseContentRange(res.headers['content-range']);
    const fits = range && range.first === this.file.position && (this.total === undefined || range.complete === this.total);
    if (!fits || (resuming && this.validators && !sameRepresentation(this.validators, validatorsOf(res)))) {
      res.destroy();
      if (!resuming) {
        throw new IsoDownloadError('E_ISO_PROTOCOL', `${this.where} answered a plain request with a part (Content-Range '${res.headers['content-range'] ?? ''}'): it cannot be downloaded from there`);
      }
      this.log.warn(`${this.where} sent a part of another file than before: starting again from byte 0`);
      await this.#restart();
      return 'again';
    }
    if (resuming) {
      this.resumed++;
      this.log.info(`resuming at byte ${this.file.position}`);
    } else this.#begin(res, range.complete);
    return 'go on';
  }

  /** Forgets the file: what the server says next is a new start. */
  async #restart(): Promise<void> {
    this.total = undefined;
    this.validators = undefined;
    await this.file.restart();
  }

  /** A 200 (or a 206 from byte 0): what the server says the file is. */
  #begin(res: IncomingMessage, total: number | undefined): void {
    this.validators = validatorsOf(res);
    this.total = total;
    if (total !== undefined && total > this.o.maxBytes) {
      res.destroy();
      throw new IsoDownloadError(
        'E_ISO_TOO_BIG',
        `the ISO at ${shown(this.resolved ?? this.url)} is ${total} bytes, more than the ${this.o.maxBytes} the RAM allows: refused before downloading; free memory or choose a smaller image`,
      );
    }
  }

  /** An answer that is neither the file nor a part of it. */
  #refuse(status: number, resuming: boolean): never {
    const at = shown(this.resolved ?? this.url);
    if (resuming && this.resolved && this.resolved.href !== this.url.href && status >= 400 && status < 500) {
      // A redirect target may expire (signed mirror links); ask the URL given again.
      this.resolved = undefined;
      throw new Dropped(`${at} answered ${statusText(status)} to the resume`, false);
    }
    if (TRANSIENT_STATUSES.has(status)) throw new Dropped(`${this.where} answered ${statusText(status)}`, false);
    if (status === 416) {
      throw new IsoDownloadError('E_ISO_HTTP', `${this.where} answered ${statusText(status)} to a resume at byte ${this.file.position}: the file there changed or shrank; start the download again`);
    }
    const fix =
      status === 404 || status === 410
        ? 'check the URL (a release may have moved to an archive)'
        : status === 401 || status === 403
          ? 'the URL needs a login or has expired; use a public mirror'
          : status >= 500
            ? 'the server is failing; try again later or another mirror'
            : 'check the URL';
    throw new IsoDownloadError('E_ISO_HTTP', `${at} answered ${statusText(status)}: ${fix}`);
  }

  /** Requests the URL (or where earlier redirects led), following at most MAX_REDIRECTS. */
  async #openFollowingRedirects(headers: OutgoingHttpHeaders, stall: StallTimer): Promise<IncomingMessage> {
    let url = this.resolved ?? this.url;
    for (let hop = 0; ; hop++) {
      this.log.debug(`GET ${shown(url)}${headers.range ? ` ${String(headers.range)}` : ''}${headers['if-range'] ? ` if-range ${String(headers['if-range'])}` : ''}`);
      const res = await this.#request(url, headers, stall);
      const status = res.statusCode ?? 0;
      this.log.debug(`${statusText(status)}${res.headers['content-length'] ? `, ${res.headers['content-length']} bytes` : ''}`);
      if (!REDIRECT_STATUSES.has(status)) {
        this.resolved = url;
        return res;
      }
      res.destroy();
      if (hop === MAX_REDIRECTS) throw new IsoDownloadError('E_ISO_REDIRECT', `${shown(this.url)} redirects more than ${MAX_REDIRECTS} times: check the URL, or give the final one`);
      let next: URL;
      try {
        next = new URL(res.headers.location ?? '', url);
      } catch {
        throw new IsoDownloadError('E_ISO_REDIRECT', `${shown(url)} redirects to '${res.headers.location ?? ''}', which is not a URL: give another URL`);
      }
      if (!res.headers.location) throw new IsoDownloadError('E_ISO_REDIRECT', `${shown(url)} answered ${statusText(status)} without saying where to: give another URL`);
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new IsoDownloadError('E_ISO_REDIRECT', `${shown(url)} redirects to a ${next.protocol} URL: give an http: or https: URL`);
      }
      if (url.protocol === 'https:' && next.protocol === 'http:' && this.sha256 === undefined) {
        throw new IsoDownloadError(
          'E_ISO_REDIRECT',
          `${shown(url)} redirects from HTTPS to plain HTTP (${shown(next)}): refused, as nothing would prove the ISO is the one you meant; give --sha256 HEX to allow it`,
        );
      }
      url = next;
    }
  }

  #request(url: URL, headers: OutgoingHttpHeaders, stall: StallTimer): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const options = {
        // A connection of its own per request: none is kept open after the download.
        agent: false as const,
        headers,
        signal: this.o.signal,
        // Without `ca`, Node's default roots: the Mozilla store built into
        // official Node binaries, so stiefelOS needs no CA file for that (a
        // distribution's Node built with --openssl-use-def-ca-store reads
        // OpenSSL's store instead, and then needs the CA bundle in the image).
        // An extra CA is added to those roots, not put in their place.
        ...(url.protocol === 'https:' && this.o.ca !== undefined ? { ca: [...rootCertificates, this.o.ca] } : {}),
      };
      const req: ClientRequest = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, resolve);
      stall.watch(req);
      req.once('error', reject);
      req.end();
    });
  }

  /** The body into the file, chunk by chunk, never past the announced length or what the RAM allows. */
  async #receive(res: IncomingMessage, stall: StallTimer): Promise<void> {
    stall.watch(res);
    const limit = this.total ?? this.o.maxBytes;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      stall.refresh();
      if (this.file.position + chunk.length > limit) {
        res.destroy();
        throw this.total === undefined
          ? new IsoDownloadError('E_ISO_TOO_BIG', `${this.where} sent more than ${this.o.maxBytes} bytes without saying how many, more than the RAM allows: stopped; nothing is booted`)
          : new IsoDownloadError('E_ISO_PROTOCOL', `${this.where} sent more than the ${this.total} bytes it announced: stopped; nothing is booted`);
      }
      await this.file.append(chunk);
      this.#firstByteSeen = true;
      this.highWater = Math.max(this.highWater, this.file.position);
      this.o.onProgress?.({ received: this.file.position, total: this.total });
    }
    if (!res.complete || (this.total !== undefined && this.file.position < this.total)) {
      throw new Dropped(`the connection to ${this.where} broke after ${this.of}`, false);
    }
  }

  /** Any failure of an attempt as a Dropped (worth another try) or a StiefelError line. */
  #explain(err: unknown, stall: StallTimer): Error {
    if (this.o.signal?.aborted) return new StiefelError('E_ABORTED', 'interrupted', { cause: err });
    if (err instanceof StiefelError || err instanceof Dropped) return err;
    if (stall.fired) return new Dropped(`${this.where} sent nothing for ${seconds(this.stallMs)} after ${this.of}`, true, { cause: err });
    const e = err as NodeJS.ErrnoException;
    const code = e.code ?? '';
    const host = (this.resolved ?? this.url).hostname;
    if (code === 'ENOTFOUND' || code === 'EAI_NONAME' || code === 'EAI_NODATA') {
      return new IsoDownloadError('E_ISO_NETWORK', `the name ${host} does not resolve (${code}): check the URL, and that the network gave this machine a name server`, { cause: err });
    }
    if (code === 'ECONNREFUSED') {
      if (this.#firstByteSeen) return new Dropped(`${this.where} refused the connection`, false, { cause: err });
      return new IsoDownloadError('E_ISO_NETWORK', `${this.where} refused the connection (ECONNREFUSED): check the URL's host and port`, { cause: err });
    }
    if (TLS_TRUST_ERRORS.test(code)) {
      return new IsoDownloadError(
        'E_ISO_TLS',
        `the certificate of ${host} is not trusted (${code}: ${e.message}): check the URL and this machine's clock, or use http: with --sha256 HEX`,
        { cause: err },
      );
    }
    if (TRANSIENT_ERRNOS.has(code) || /aborted|socket hang up|premature close/i.test(e.message ?? '')) {
      this.log.debug(`the connection broke: ${code} ${e.message}`);
      return new Dropped(`the connection to ${this.where} broke after ${this.of}`, false, { cause: err });
    }
    return new IsoDownloadError('E_ISO_NETWORK', `downloading from ${this.where} failed: ${e.message ?? String(err)}`, { cause: err });
  }

  /** The line for a download that kept breaking off. */
  gaveUp(last: Dropped, attempts: number): IsoDownloadError {
    const times = attempts === 1 ? 'and no retries were allowed' : `${attempts} times in a row without progress`;
    if (last.stalled) {
      return new IsoDownloadError('E_ISO_STALLED', `${last.message}, ${times}: check the network, or try again later or another mirror; nothing is booted`, { cause: last });
    }
    return new IsoDownloadError('E_ISO_TRUNCATED', `the download is truncated: ${last.message}, ${times}: try again later or another mirror; nothing is booted`, { cause: last });
  }
}

function seconds(ms: number): string {
  return ms >= 1000 ? `${Math.round(ms / 100) / 10} s` : `${ms} ms`;
}

/** Destroys the request or response it watches when no byte came for `ms`. */
class StallTimer {
  fired = false;
  #target: { destroy(err?: Error): unknown } | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(ms: number) {
    this.#timer = setTimeout(() => {
      this.fired = true;
      this.#target?.destroy(new Error('stalled'));
    }, ms);
  }

  watch(target: { destroy(err?: Error): unknown }): void {
    this.#target = target;
    this.refresh();
  }

  refresh(): void {
    this.#timer.refresh();
  }

  stop(): void {
    clearTimeout(this.#timer);
  }
}

/** Downloads `o.url` to `o.dest`, checked against `o.sha256` when given. */
export async function downloadIso(o: DownloadOptions, ctx: { log: Logger }): Promise<Downloaded> {
  const checked = checkOptions(o);
  const started = performance.now();
  const retries = o.retries ?? DEFAULT_RETRIES;
  const partial = o.inPlace ? o.dest : `${o.dest}.partial`;
  // An older file at dest must not pass for this download, and on a tmpfs it holds the RAM this one needs.
  if (!o.inPlace) await fs.rm(o.dest, { force: true });
  const file = await PartialFile.create(partial, o.inPlace);
  const t = new Transfer(o, checked, file, ctx.log);
  try {
    let failures = 0;
    let pause = RETRY_PAUSE_MS;
    for (;;) {
      const before = t.highWater;
      try {
        if ((await t.attempt()) === 'done') break;
        continue;
      } catch (err) {
        if (!(err instanceof Dropped)) throw err;
        if (t.highWater > before) {
          failures = 0;
          pause = RETRY_PAUSE_MS;
        }
        failures++;
        if (failures > retries) throw t.gaveUp(err, failures);
        ctx.log.warn(`${err.message}; trying again in ${seconds(pause)} (${failures} of ${retries})`);
      }
      try {
        await sleep(pause, undefined, { signal: o.signal });
      } catch (err) {
        throw new StiefelError('E_ABORTED', 'interrupted', { cause: err });
      }
      pause = Math.min(pause * 2, MAX_RETRY_PAUSE_MS);
    }
    await file.fh.close();
    const sha256 = file.digest();
    if (t.sha256 !== undefined && sha256 !== t.sha256) {
      throw new IsoDownloadError('E_ISO_CHECKSUM', `the ISO from ${shown(t.url)} has SHA-256 ${sha256}, not the ${t.sha256} you gave: nothing is booted`);
    }
    if (!o.inPlace) await fs.rename(partial, o.dest);
    const result = { path: o.dest, bytes: file.position, sha256, resumed: t.resumed, seconds: (performance.now() - started) / 1000 };
    ctx.log.debug(`${result.bytes} bytes in ${result.seconds.toFixed(1)} s, resumed ${result.resumed} times, SHA-256 ${sha256}`);
    return result;
  } catch (err) {
    await file.fh.close().catch(() => {});
    if (!o.inPlace) await fs.rm(partial, { force: true });
    throw err;
  }
}
