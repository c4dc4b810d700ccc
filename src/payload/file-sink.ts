// Writes one downloaded file to a temporary path while verifying it against
// the manifest's piece digests (pieces.ts). Nothing here renames: the caller
// moves verified files into place, or deletes them.
//
// Hashing and writing run on worker threads, one piece per worker at a time,
// so that the main thread only decrypts TLS and SHA-256 uses several cores:
// it costs more CPU per byte than TLS reception on CPUs without SHA
// extensions. Memory is bounded: network chunks (TLS records, at most
// 16 KiB) are copied into batches of BATCH_SIZE, at most IN_FLIGHT_PER_WORKER
// batches per worker are under way, and workers hand every batch's memory
// back to be refilled (transferred both ways, never copied, never left to the GC).
import { constants, promises as fs } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { StiefelError } from '../errors';
import { pieceCount, pieceRange } from './pieces';

export const BATCH_SIZE = 1024 * 1024;
export const IN_FLIGHT_PER_WORKER = 6;

export class PayloadVerifyError extends StiefelError {}

export interface ExpectedFile {
  size: number;
  pieceSize: number;
  pieceSha256: readonly string[];
}

// Plain JavaScript, evaluated as a worker: the bundle is one file, so the
// worker cannot be a separate module. Messages: {fd} once, then
// {buf, len, pos, piece, expect} per batch (buf transferred; expect, the
// piece's digest, only on its last batch).
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash, timingSafeEqual } = require('node:crypto');
const { writeSync } = require('node:fs');
const hashes = new Map();
let fd = -1;
parentPort.on('message', (m) => {
  try {
    if (m.fd !== undefined) { fd = m.fd; return; }
    const buf = Buffer.from(m.buf, 0, m.len);
    let h = hashes.get(m.piece);
    if (!h) { h = createHash('sha256'); hashes.set(m.piece, h); }
    h.update(buf);
    let done = 0;
    while (done < m.len) done += writeSync(fd, buf, done, m.len - done, m.pos + done);
    let verified;
    if (m.expect !== undefined) {
      hashes.delete(m.piece);
      verified = timingSafeEqual(h.digest(), Buffer.from(m.expect, 'hex'));
    }
    parentPort.postMessage({ ack: true, buf: m.buf, piece: m.piece, verified }, [m.buf]);
  } catch (err) {
    parentPort.postMessage({ error: String((err && err.message) || err) });
  }
});
`;

interface WorkerReply {
  ack?: boolean;
  buf?: ArrayBuffer;
  piece?: number;
  verified?: boolean;
  error?: string;
}

export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

export class FileSink {
  readonly path: string;
  readonly #what: string;
  readonly #expected: ExpectedFile;
  #handle: fs.FileHandle | undefined;
  #workers: Worker[] = [];
  #received = 0;
  #position = 0;
  #batch: Buffer = Buffer.allocUnsafeSlow(BATCH_SIZE);
  #fill = 0;
  #inFlight = 0;
  #verifiedPieces = 0;
  readonly #free: ArrayBuffer[] = [];
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  private constructor(path: string, what: string, expected: ExpectedFile) {
    this.path = path;
    this.#what = what;
    this.#expected = expected;
  }

  /** Creates the file (it must not exist yet), mode 0600. */
  static async create(path: string, what: string, expected: ExpectedFile, options: { workers?: number } = {}): Promise<FileSink> {
    if (expected.pieceSize % BATCH_SIZE !== 0) throw new RangeError('piece size must be a multiple of the batch size');
    if (pieceCount(expected.size, expected.pieceSize) !== expected.pieceSha256.length) throw new RangeError('piece digests do not match the size');
    const sink = new FileSink(path, what, expected);
    sink.#handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const count = Math.min(options.workers ?? defaultWorkerCount(), Math.max(1, expected.pieceSha256.length));
    for (let i = 0; i < count; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (m: WorkerReply) => sink.#onReply(m));
      worker.on('error', (err) => sink.#fail(err));
      worker.postMessage({ fd: sink.#handle.fd });
      sink.#workers.push(worker);
    }
    return sink;
  }

  get received(): number {
    return this.#received;
  }

  #onReply(m: WorkerReply): void {
    if (m.error !== undefined) this.#fail(new StiefelError('E_OUTPUT', `cannot write ${this.path}: ${m.error}`));
    if (m.ack) this.#inFlight -= 1;
    if (m.buf) this.#free.push(m.buf);
    if (m.verified === true) this.#verifiedPieces += 1;
    if (m.verified === false) {
      const { start, end } = pieceRange(m.piece!, this.#expected.size, this.#expected.pieceSize);
      this.#fail(
        new PayloadVerifyError(
          'E_PAYLOAD_DIGEST',
          `the ${this.#what} does not match the SHA-256 digests in the signed manifest (bytes ${start} to ${end - 1}): it was altered on the laptop or on the way; nothing was used`,
        ),
      );
    }
    this.#wake?.();
  }

  #fail(err: Error): void {
    this.#failure ??= err;
    this.#wake?.();
  }

  async #waitFor(condition: () => boolean): Promise<void> {
    while (!condition()) {
      if (this.#failure) throw this.#failure;
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
    if (this.#failure) throw this.#failure;
  }

  /** Takes the next bytes; resolves when there is room for more. */
  async write(chunk: Buffer): Promise<void> {
    if (this.#failure) throw this.#failure;
    if (this.#received + chunk.length > this.#expected.size) {
      throw new PayloadVerifyError(
        'E_PAYLOAD_SIZE',
        `the server sent more than the ${this.#expected.size} bytes of the ${this.#what} that its manifest lists: refused`,
      );
    }
    this.#received += chunk.length;
    let offset = 0;
    while (offset < chunk.length) {
      const n = Math.min(chunk.length - offset, BATCH_SIZE - this.#fill);
      chunk.copy(this.#batch, this.#fill, offset, offset + n);
      this.#fill += n;
      offset += n;
      if (this.#fill === BATCH_SIZE) await this.#flush();
    }
  }

  async #flush(): Promise<void> {
    if (this.#fill === 0) return;
    const len = this.#fill;
    const pos = this.#position;
    const { pieceSize, pieceSha256, size } = this.#expected;
    // Batches start at multiples of BATCH_SIZE, which divides pieceSize: each lies in one piece.
    const piece = Math.floor(pos / pieceSize);
    const last = pos + len === pieceRange(piece, size, pieceSize).end;
    const worker = this.#workers[piece % this.#workers.length]!;
    const buf = this.#batch.buffer as ArrayBuffer;
    worker.postMessage({ buf, len, pos, piece, expect: last ? pieceSha256[piece] : undefined }, [buf]);
    this.#position += len;
    this.#inFlight += 1;
    this.#fill = 0;
    await this.#waitFor(() => this.#inFlight < IN_FLIGHT_PER_WORKER * this.#workers.length);
    const reused = this.#free.pop();
    this.#batch = reused ? Buffer.from(reused) : Buffer.allocUnsafeSlow(BATCH_SIZE);
  }

  /**
   * Flushes, closes and verifies. Throws PayloadVerifyError when the size or
   * a piece digest differ from the manifest's (the caller deletes the file).
   */
  async finish(): Promise<void> {
    try {
      if (this.#received !== this.#expected.size) {
        throw new PayloadVerifyError(
          'E_PAYLOAD_TRUNCATED',
          `the ${this.#what} is truncated: got ${this.#received} of the ${this.#expected.size} bytes the manifest lists`,
        );
      }
      await this.#flush();
      await this.#waitFor(() => this.#inFlight === 0);
      if (this.#verifiedPieces !== this.#expected.pieceSha256.length) {
        throw new StiefelError('E_INTERNAL', `internal error: ${this.#verifiedPieces} of ${this.#expected.pieceSha256.length} pieces of the ${this.#what} verified`);
      }
    } finally {
      await this.#close();
    }
  }

  async #close(): Promise<void> {
    const workers = this.#workers;
    this.#workers = [];
    // The workers write synchronously: terminating them stops any write in progress.
    await Promise.all(workers.map((w) => w.terminate()));
    await this.#handle?.close().catch(() => undefined);
    this.#handle = undefined;
  }

  /** Closes without verifying (after an error). */
  async abandon(): Promise<void> {
    await this.#close();
  }
}
