// Where the boot payload comes from: the seam between serving a payload and
// finding one. The first implementation serves the files named in the config
// (`server.boot`); boot-entry discovery plugs in as another
// BootPayloadSource and may ask for a LUKS passphrase through `passphrase`.
import { createReadStream, promises as fs, type Stats } from 'node:fs';
import { Readable } from 'node:stream';
import { StiefelError } from '../errors';
import type { InitramfsFamily } from '../config/schema';
import type { Logger } from '../log';
import type { PayloadFileName } from '../payload/manifest';
import { PieceHasher, pieceSizeFor } from '../payload/pieces';
import type { PassphraseProvider } from '../disk/passphrase';

export interface PayloadFile {
  size: number;
  /** Bytes per piece (pieces.ts). */
  pieceSize: number;
  /** SHA-256 of every piece of exactly `size` bytes, lower-case hex. */
  pieceSha256: string[];
  /** A stream of exactly the bytes digested (the server counts them). */
  open(): Promise<Readable>;
  /** What to call it in messages (a path, usually). */
  describe: string;
}

export interface BootPayload {
  files: Record<PayloadFileName, PayloadFile>;
  /** The files on this machine (for the laptop's own way back to them). */
  local: Record<PayloadFileName, string>;
  /** The laptop OS's own command line (without stiefelsystem's additions). */
  cmdline: string;
  family: InitramfsFamily;
}

export interface BootPayloadContext {
  log: Logger;
  signal: AbortSignal;
  /** Asks the person at the desktop for a LUKS passphrase, through the payload channel (TLS-PSK). */
  passphrase: PassphraseProvider;
}

export interface BootPayloadSource {
  /** Resolves the payload for one client session. */
  resolve(ctx: BootPayloadContext): Promise<BootPayload>;
}

export const HASH_CHUNK = 1024 * 1024;

/**
 * A PayloadFile from parts that can be opened again, concatenated in order:
 * boot-entry discovery's `scan.open(file)` with `file.length` for a kernel,
 * or for each initrd of an entry. The parts are read once here for the piece
 * digests; `open()` reads them again, each must give exactly `length` bytes,
 * and the client's verification catches any other difference.
 */
export async function payloadFileFromParts(
  describe: string,
  parts: ReadonlyArray<{ length: number; open: () => Readable | Promise<Readable> }>,
  signal?: AbortSignal,
): Promise<PayloadFile> {
  const size = parts.reduce((a, p) => a + p.length, 0);
  const concat = (): Readable =>
    Readable.from(
      (async function* () {
        for (const [i, part] of parts.entries()) {
          let n = 0;
          for await (const chunk of (await part.open()) as AsyncIterable<Buffer>) {
            if (signal?.aborted) throw signal.reason;
            n += chunk.length;
            yield chunk;
          }
          if (n !== part.length) throw new StiefelError('E_PAYLOAD_CHANGED', `part ${i + 1} of ${describe} gave ${n} bytes, not ${part.length}`);
        }
      })(),
    );
  const hasher = new PieceHasher(pieceSizeFor(size));
  for await (const chunk of concat() as AsyncIterable<Buffer>) hasher.update(chunk);
  return { size, pieceSize: hasher.pieceSize, pieceSha256: hasher.digests(), describe, open: async () => concat() };
}

/** Piece digests of a file, streamed (bounded memory whatever the size). */
export async function pieceDigestsOfFile(path: string, pieceSize: number, signal?: AbortSignal): Promise<{ pieceSha256: string[]; size: number }> {
  const hasher = new PieceHasher(pieceSize);
  const stream = createReadStream(path, { highWaterMark: HASH_CHUNK, signal });
  for await (const chunk of stream as AsyncIterable<Buffer>) hasher.update(chunk);
  return { pieceSha256: hasher.digests(), size: hasher.size };
}

interface CachedDigest {
  key: string;
  pieceSize: number;
  pieceSha256: string[];
  size: number;
}

const statKey = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

export interface FilesPayloadOptions {
  kernel: string;
  initrd: string;
  cmdline: string;
  family: InitramfsFamily;
}

/**
 * Serves the kernel and initrd named in the config. Digests are computed once
 * and kept while the files' identity, size and times stay the same.
 */
export class FilesPayloadSource implements BootPayloadSource {
  readonly #options: FilesPayloadOptions;
  readonly #cache = new Map<string, CachedDigest>();
  readonly #inflight = new Map<string, Promise<CachedDigest>>();

  constructor(options: FilesPayloadOptions) {
    this.#options = options;
  }

  async #stat(path: string, what: string): Promise<Stats> {
    let st: Stats;
    try {
      st = await fs.stat(path);
    } catch (err) {
      throw new StiefelError('E_PAYLOAD_FILE', `cannot read the ${what} ${path} (server.boot in the config): ${(err as Error).message}`, { cause: err });
    }
    if (!st.isFile()) throw new StiefelError('E_PAYLOAD_FILE', `the ${what} ${path} (server.boot in the config) is not a regular file`);
    return st;
  }

  async #digest(path: string, what: string, signal?: AbortSignal): Promise<CachedDigest> {
    const st = await this.#stat(path, what);
    const key = statKey(st);
    const cached = this.#cache.get(path);
    if (cached?.key === key) return cached;
    const running = this.#inflight.get(key);
    if (running) return running;
    const job = (async () => {
      const pieceSize = pieceSizeFor(st.size);
      const { pieceSha256, size } = await pieceDigestsOfFile(path, pieceSize, signal);
      const after = await this.#stat(path, what);
      if (statKey(after) !== key || size !== st.size) {
        throw new StiefelError('E_PAYLOAD_CHANGED', `the ${what} ${path} changed while its digest was computed; try again`);
      }
      const entry = { key, pieceSize, pieceSha256, size };
      this.#cache.set(path, entry);
      return entry;
    })().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, job);
    return job;
  }

  /** Computes the digests ahead of the first client (server start-up). */
  async prepare(signal?: AbortSignal): Promise<void> {
    await Promise.all([this.#digest(this.#options.kernel, 'kernel', signal), this.#digest(this.#options.initrd, 'initrd', signal)]);
  }

  async resolve(ctx: BootPayloadContext): Promise<BootPayload> {
    const file = async (path: string, what: string): Promise<PayloadFile> => {
      const d = await this.#digest(path, what, ctx.signal);
      return {
        size: d.size,
        pieceSize: d.pieceSize,
        pieceSha256: d.pieceSha256,
        describe: path,
        open: async () => {
          // A file replaced or modified since it was digested must not be sent under the old digest.
          const st = await this.#stat(path, what);
          if (statKey(st) !== d.key) {
            this.#cache.delete(path);
            throw new StiefelError('E_PAYLOAD_CHANGED', `the ${what} ${path} changed after its digest was computed; the client should try again`);
          }
          if (d.size === 0) return Readable.from([]);
          return createReadStream(path, { highWaterMark: HASH_CHUNK, start: 0, end: d.size - 1 });
        },
      };
    };
    const [kernel, initrd] = await Promise.all([file(this.#options.kernel, 'kernel'), file(this.#options.initrd, 'initrd')]);
    return { files: { kernel, initrd }, local: { kernel: this.#options.kernel, initrd: this.#options.initrd }, cmdline: this.#options.cmdline, family: this.#options.family };
  }
}

