// A sparse in-memory backend (like nbdkit's memory plugin): pages are
// allocated on first write and freed by trim, so holes are real and
// extents() can report them. For tests, fuzzing and scratch exports.
import { BackendError } from './errno';
import type { Backend, BackendCapabilities, BlockExtent, WriteOptions, ZeroOptions } from './backend';
import { NBD_EINVAL, NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol';

export const MEMORY_PAGE_SIZE = 64 * 1024;

export interface MemoryBackendOptions {
  size: number;
  /** Optional initial contents (copied), at most `size` bytes. */
  initial?: Uint8Array;
}

export class MemoryBackend implements Backend {
  readonly size: number;
  readonly description: string;
  readonly capabilities: BackendCapabilities = {
    readOnly: false,
    flush: true,
    fua: true,
    trim: true,
    zero: true,
    fastZero: true,
    multiConn: true,
    cache: true,
    extents: true,
  };
  readonly #pages = new Map<number, Buffer>();
  /** Counts of calls, for tests that check what the server asked for. */
  readonly calls = { pread: 0, pwrite: 0, flush: 0, trim: 0, writeZeroes: 0, cache: 0, extents: 0 };
  #closed = false;

  constructor(options: MemoryBackendOptions) {
    if (!Number.isSafeInteger(options.size) || options.size < 0) throw new RangeError('memory backend size must be a non-negative integer');
    this.size = options.size;
    this.description = `${options.size} bytes in memory`;
    if (options.initial) this.#write(Buffer.from(options.initial.subarray(0, options.size)), 0);
  }

  #check(offset: number, length: number): void {
    // An invariant: the session checks ranges before calling a backend.
    if (this.#closed) throw new Error('memory backend used after close');
    if (!(offset >= 0 && length >= 0 && offset + length <= this.size)) {
      throw new BackendError(NBD_EINVAL, `range ${offset}+${length} outside the ${this.size}-byte export`);
    }
  }

  async pread(buf: Buffer, offset: number): Promise<void> {
    this.calls.pread++;
    this.#check(offset, buf.length);
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const pageNo = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - pageNo * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, buf.length - done);
      const page = this.#pages.get(pageNo);
      if (page) page.copy(buf, done, inPage, inPage + n);
      else buf.fill(0, done, done + n);
      done += n;
    }
  }

  async pwrite(data: readonly Buffer[], offset: number, _options: WriteOptions): Promise<void> {
    this.calls.pwrite++;
    let length = 0;
    for (const d of data) length += d.length;
    this.#check(offset, length);
    let pos = offset;
    for (const d of data) {
      this.#write(d, pos);
      pos += d.length;
    }
  }

  #write(data: Buffer, offset: number): void {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const pageNo = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - pageNo * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, data.length - done);
      let page = this.#pages.get(pageNo);
      if (!page) this.#pages.set(pageNo, (page = Buffer.alloc(MEMORY_PAGE_SIZE)));
      data.copy(page, inPage, done, done + n);
      done += n;
    }
  }

  async flush(): Promise<void> {
    this.calls.flush++;
  }

  async trim(offset: number, length: number, _options: WriteOptions): Promise<void> {
    this.calls.trim++;
    this.#check(offset, length);
    this.#zero(offset, length, true);
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    this.calls.writeZeroes++;
    this.#check(offset, length);
    this.#zero(offset, length, options.mayTrim);
  }

  #zero(offset: number, length: number, punch: boolean): void {
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const pageNo = Math.floor(pos / MEMORY_PAGE_SIZE);
      const inPage = pos - pageNo * MEMORY_PAGE_SIZE;
      const n = Math.min(MEMORY_PAGE_SIZE - inPage, end - pos);
      const page = this.#pages.get(pageNo);
      if (n === MEMORY_PAGE_SIZE && punch) this.#pages.delete(pageNo);
      else if (page) page.fill(0, inPage, inPage + n);
      else if (!punch) this.#pages.set(pageNo, Buffer.alloc(MEMORY_PAGE_SIZE));
      pos += n;
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    this.calls.cache++;
    this.#check(offset, length);
  }

  async extents(offset: number, length: number, maxExtents: number): Promise<BlockExtent[]> {
    this.calls.extents++;
    this.#check(offset, length);
    const out: BlockExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const pageNo = Math.floor(pos / MEMORY_PAGE_SIZE);
      const pageEnd = Math.min((pageNo + 1) * MEMORY_PAGE_SIZE, this.size);
      const flags = this.#pages.has(pageNo) ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
      const n = pageEnd - pos;
      const last = out[out.length - 1];
      if (last && last.flags === flags) last.length += n;
      else if (out.length < maxExtents) out.push({ length: n, flags });
      else break;
      pos = pageEnd;
    }
    return out;
  }

  /** Pages currently allocated (for tests of trim and sparseness). */
  get allocatedPages(): number {
    return this.#pages.size;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#pages.clear();
  }
}
