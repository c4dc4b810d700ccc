// Writes one downloaded file to a temporary path while verifying it against
// the manifest's piece digests (pieces.ts). Nothing here renames: the caller
// moves verified files into place, or deletes them.
//
// Hashing and writing run on worker threads, one piece per worker at a time,
// so that the main thread only decrypts TLS and SHA-256 uses several cores:
// it costs more CPU per byte than TLS reception on CPUs without SHA
// extensions. With one CPU there is no other core to use, and handing every
// batch to a thread and back only adds work (measured under emulation, see
// BENCHMARKS.md): then batches are hashed and written on the calling thread,
// by the same code. Memory is bounded: network chunks (TLS records, at most
// 16 KiB) are copied into batches of BATCH_SIZE, at most IN_FLIGHT_PER_WORKER
// batches per worker are under way, and workers hand every batch's memory
// back to be refilled (transferred both ways, never copied, never left to the GC).
import { createHash, timingSafeEqual, type Hash } from 'node:crypto';
import { constants, promises as fs, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { StiefelError } from '../errors';
import { pieceCount, pieceRange } from '../payload/pieces';

export const BATCH_SIZE = 1024 * 1024;
export const IN_FLIGHT_PER_WORKER = 6;

export class PayloadVerifyError extends StiefelError {}

export interface ExpectedFile {
  size: number;
  pieceSize: number;
  pieceSha256: readonly string[];
}

/** One batch of a file: `len` bytes of `buf` at `pos`, in piece `piece`; `expect`, the piece's digest, only on its last batch. */
interface BatchMessage {
  sink: number;
  fd: number;
  piece: number;
  buf: ArrayBuffer;
  len: number;
  pos: number;
  expect: string | undefined;
}

interface BatchLib {
  createHash: typeof createHash;
  timingSafeEqual: typeof timingSafeEqual;
  writeSync: typeof writeSync;
}

/** What handleBatch uses, on the calling thread (a worker builds its own). */
const LIB: BatchLib = { createHash, timingSafeEqual, writeSync };

/**
 * Hashes a batch into its piece's digest and writes it; on the piece's last
 * batch, compares the digest. The reply gives `buf` back. Runs on a worker
 * (WORKER_SOURCE carries its source text) or on the calling thread, so it
 * uses only its parameters and globals, and holds no inner functions (a
 * transpiler would add helpers to those).
 */
function handleBatch(m: BatchMessage, hashes: Map<string, Hash>, lib: BatchLib): WorkerReply {
  const key = m.sink + ':' + m.piece;
  try {
    const buf = Buffer.from(m.buf, 0, m.len);
    let h = hashes.get(key);
    if (!h) {
      h = lib.createHash('sha256');
      hashes.set(key, h);
    }
    h.update(buf);
    let done = 0;
    while (done < m.len) done += lib.writeSync(m.fd, buf, done, m.len - done, m.pos + done);
    let verified: boolean | undefined;
    if (m.expect !== undefined) {
      hashes.delete(key);
      verified = lib.timingSafeEqual(h.digest(), Buffer.from(m.expect, 'hex'));
    }
    return { sink: m.sink, buf: m.buf, piece: m.piece, verified };
  } catch (err) {
    hashes.delete(key);
    return { sink: m.sink, buf: m.buf, error: String((err as Error | undefined)?.message ?? err) };
  }
}

// Plain JavaScript, evaluated as a worker: the bundle is one file, so the
// worker cannot be a separate module. One message (a BatchMessage, buf
// transferred) per batch.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash, timingSafeEqual } = require('node:crypto');
const { writeSync } = require('node:fs');
const handleBatch = ${handleBatch.toString()};
const lib = { createHash, timingSafeEqual, writeSync };
const hashes = new Map();
parentPort.on('message', (m) => {
  const reply = handleBatch(m, hashes, lib);
  parentPort.postMessage(reply, [reply.buf]);
});
`;

interface WorkerReply {
  sink: number;
  buf: ArrayBuffer;
  piece?: number;
  verified?: boolean;
  error?: string;
}

/** Up to 4 workers, one per CPU; none (batches handled on the calling thread) with one CPU. */
export function defaultWorkerCount(cpus: number = availableParallelism()): number {
  return cpus <= 1 ? 0 : Math.min(4, cpus);
}

/**
 * Worker threads shared by the sinks of one download. Starting a worker
 * costs tens of milliseconds of CPU: start the pool early (while the TLS
 * handshake runs) and reuse it for every file.
 */
export class HashWorkerPool {
  readonly #workers: Worker[] = [];
  readonly #sinks = new Map<number, (m: WorkerReply) => void>();
  /** The digests in progress when there are no workers. */
  readonly #hashes = new Map<string, Hash>();
  #failure: Error | undefined;
  #nextId = 1;

  constructor(count: number = defaultWorkerCount()) {
    for (let i = 0; i < count; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true });
      worker.on('message', (m: WorkerReply) => this.#sinks.get(m.sink)?.(m));
      worker.on('error', (err) => {
        this.#failure ??= err;
        for (const handler of this.#sinks.values()) handler({ sink: 0, buf: new ArrayBuffer(0), error: err.message });
      });
      this.#workers.push(worker);
    }
  }

  /** Batches handled at once: one per worker, or the calling thread's one. */
  get size(): number {
    return Math.max(1, this.#workers.length);
  }

  register(handler: (m: WorkerReply) => void): number {
    if (this.#failure) throw this.#failure;
    const id = this.#nextId++;
    this.#sinks.set(id, handler);
    return id;
  }

  unregister(id: number): void {
    this.#sinks.delete(id);
  }

  /** Hands a batch to a worker (by `index`: one piece's batches to the same one), or handles it now; the reply comes later. */
  post(index: number, message: BatchMessage): void {
    if (this.#workers.length > 0) {
      this.#workers[index % this.#workers.length]!.postMessage(message, [message.buf]);
      return;
    }
    const reply = handleBatch(message, this.#hashes, LIB);
    queueMicrotask(() => this.#sinks.get(reply.sink)?.(reply));
  }

  async close(): Promise<void> {
    const workers = this.#workers.splice(0);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export class FileSink {
  readonly path: string;
  readonly #what: string;
  readonly #expected: ExpectedFile;
  #handle: fs.FileHandle | undefined;
  #pool!: HashWorkerPool;
  #ownPool = false;
  #poolBroken = false;
  #id = 0;
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

  /**
   * Creates the file (it must not exist yet), mode 0600. Uses `pool` when
   * given (the caller closes it), else starts its own workers.
   */
  static async create(path: string, what: string, expected: ExpectedFile, options: { pool?: HashWorkerPool; workers?: number } = {}): Promise<FileSink> {
    if (expected.pieceSize % BATCH_SIZE !== 0) throw new RangeError('piece size must be a multiple of the batch size');
    if (pieceCount(expected.size, expected.pieceSize) !== expected.pieceSha256.length) throw new RangeError('piece digests do not match the size');
    const sink = new FileSink(path, what, expected);
    sink.#handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    if (options.pool) {
      sink.#pool = options.pool;
    } else {
      sink.#pool = new HashWorkerPool(Math.min(options.workers ?? defaultWorkerCount(), Math.max(1, expected.pieceSha256.length)));
      sink.#ownPool = true;
    }
    sink.#id = sink.#pool.register((m) => sink.#onReply(m));
    return sink;
  }

  get received(): number {
    return this.#received;
  }

  #onReply(m: WorkerReply): void {
    if (m.sink === 0) this.#poolBroken = true;
    if (m.error !== undefined) this.#fail(new StiefelError('E_OUTPUT', `cannot write ${this.path}: ${m.error}`));
    if (m.sink !== 0) this.#inFlight -= 1;
    if (m.buf.byteLength === BATCH_SIZE) this.#free.push(m.buf);
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
    const buf = this.#batch.buffer as ArrayBuffer;
    this.#pool.post(piece, { sink: this.#id, fd: this.#handle!.fd, buf, len, pos, piece, expect: last ? pieceSha256[piece] : undefined });
    this.#position += len;
    this.#inFlight += 1;
    this.#fill = 0;
    await this.#waitFor(() => this.#inFlight < IN_FLIGHT_PER_WORKER * this.#pool.size);
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
    if (this.#ownPool) {
      // Terminating our own workers stops any write in progress.
      await this.#pool.close();
    } else {
      // Shared workers may still hold batches for this file: its descriptor
      // stays open until they are done, so no write lands in a file opened later.
      while (this.#inFlight > 0 && !this.#poolBroken) await new Promise<void>((resolve) => (this.#wake = resolve));
    }
    this.#pool.unregister(this.#id);
    await this.#handle?.close().catch(() => undefined);
    this.#handle = undefined;
  }

  /** Closes without verifying (after an error). */
  async abandon(): Promise<void> {
    await this.#close();
  }
}
