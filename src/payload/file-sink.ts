// Writes one downloaded file to a temporary path while computing its SHA-256,
// and checks size and digest against the manifest at the end. Nothing here
// renames: the caller moves verified files into place, or deletes them.
//
// Hashing and writing run on a worker thread, so that the main thread only
// decrypts TLS: SHA-256 costs about as much CPU per byte as TLS reception on
// machines without SHA extensions, and the two then overlap. Memory is
// bounded: network chunks (TLS records, at most 16 KiB) are copied into
// batches of BATCH_SIZE, at most MAX_IN_FLIGHT batches are on their way to
// the worker at once, and the worker hands every batch's memory back to be
// reused (transferred both ways, never copied, never left to the GC).
import { timingSafeEqual } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { StiefelError } from '../errors';

export const BATCH_SIZE = 1024 * 1024;
export const MAX_IN_FLIGHT = 8;

export class PayloadVerifyError extends StiefelError {}

// Plain JavaScript, evaluated as a worker: the bundle is one file, so the
// worker cannot be a separate module. Messages: {fd} once, then
// {buf, len, pos} (buf transferred), then {finish: true}.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { writeSync } = require('node:fs');
let hash = createHash('sha256');
let fd = -1;
parentPort.on('message', (m) => {
  try {
    if (m.fd !== undefined) { fd = m.fd; return; }
    if (m.finish) { parentPort.postMessage({ digest: hash.digest('hex') }); return; }
    const buf = Buffer.from(m.buf, 0, m.len);
    hash.update(buf);
    let done = 0;
    while (done < m.len) done += writeSync(fd, buf, done, m.len - done, m.pos + done);
    // The buffer goes back to be filled again: no garbage per batch.
    parentPort.postMessage({ ack: m.len, buf: m.buf }, [m.buf]);
  } catch (err) {
    parentPort.postMessage({ error: String(err && err.message || err) });
  }
});
`;

export class FileSink {
  readonly path: string;
  readonly #what: string;
  readonly #size: number;
  readonly #sha256: string;
  #handle: fs.FileHandle | undefined;
  #worker: Worker | undefined;
  #received = 0;
  #position = 0;
  #batch: Buffer = Buffer.allocUnsafeSlow(BATCH_SIZE);
  readonly #free: ArrayBuffer[] = [];
  #fill = 0;
  #inFlight = 0;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;
  #digest: ((hex: string) => void) | undefined;

  private constructor(path: string, what: string, expected: { size: number; sha256: string }) {
    this.path = path;
    this.#what = what;
    this.#size = expected.size;
    this.#sha256 = expected.sha256;
  }

  /** Creates the file (it must not exist yet), mode 0600. */
  static async create(path: string, what: string, expected: { size: number; sha256: string }): Promise<FileSink> {
    const sink = new FileSink(path, what, expected);
    sink.#handle = await fs.open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    sink.#worker = worker;
    worker.on('message', (m: { ack?: number; buf?: ArrayBuffer; digest?: string; error?: string }) => {
      if (m.error !== undefined) sink.#fail(new StiefelError('E_OUTPUT', `cannot write ${path}: ${m.error}`));
      if (m.ack !== undefined) sink.#inFlight -= 1;
      if (m.buf) sink.#free.push(m.buf);
      if (m.digest !== undefined) sink.#digest?.(m.digest);
      sink.#wake?.();
    });
    worker.on('error', (err) => sink.#fail(err));
    worker.postMessage({ fd: sink.#handle.fd });
    return sink;
  }

  get received(): number {
    return this.#received;
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
    if (this.#received + chunk.length > this.#size) {
      throw new PayloadVerifyError(
        'E_PAYLOAD_SIZE',
        `the server sent more than the ${this.#size} bytes of the ${this.#what} that its manifest lists: refused`,
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
    const buf = this.#batch;
    const len = this.#fill;
    this.#worker!.postMessage({ buf: buf.buffer, len, pos: this.#position }, [buf.buffer as ArrayBuffer]);
    this.#position += len;
    this.#inFlight += 1;
    this.#fill = 0;
    await this.#waitFor(() => this.#inFlight < MAX_IN_FLIGHT);
    const reused = this.#free.pop();
    this.#batch = reused ? Buffer.from(reused) : Buffer.allocUnsafeSlow(BATCH_SIZE);
  }

  /**
   * Flushes, closes and verifies. Throws PayloadVerifyError when the size or
   * the digest differ from the manifest's (the caller deletes the file).
   */
  async finish(): Promise<void> {
    try {
      await this.#flush();
      await this.#waitFor(() => this.#inFlight === 0);
      let digest: string | undefined;
      this.#digest = (hex) => (digest = hex);
      this.#worker!.postMessage({ finish: true });
      await this.#waitFor(() => digest !== undefined);
      if (this.#received !== this.#size) {
        throw new PayloadVerifyError(
          'E_PAYLOAD_TRUNCATED',
          `the ${this.#what} is truncated: got ${this.#received} of the ${this.#size} bytes the manifest lists`,
        );
      }
      if (!timingSafeEqual(Buffer.from(digest!, 'hex'), Buffer.from(this.#sha256, 'hex'))) {
        throw new PayloadVerifyError(
          'E_PAYLOAD_DIGEST',
          `the ${this.#what} does not match the SHA-256 digest in the signed manifest: it was altered on the laptop or on the way; nothing was used`,
        );
      }
    } finally {
      await this.#close();
    }
  }

  async #close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    // The worker writes synchronously; it is idle once every batch was acknowledged or it is terminated.
    if (w) await w.terminate();
    await this.#handle?.close().catch(() => undefined);
    this.#handle = undefined;
  }

  /** Closes without verifying (after an error). */
  async abandon(): Promise<void> {
    await this.#close();
  }
}
