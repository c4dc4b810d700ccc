// Reusable I/O buffers. A read reply is one buffer: the reply header, then
// the data read straight from the backend behind it, so a reply is a single
// write with no copy. Buffers come back when the transport has sent them.
// Size classes are a power of two plus HEADROOM bytes, so that a 256 KiB
// read with its 28-byte header takes a 256 KiB + 64 B buffer, not 512 KiB
// (fresh buffers cost page faults; measured: 16k faults per GiB copied
// before this). At most `maxPooledBytes` stay idle.

const MIN_CLASS = 12; // 4 KiB
/** Room for the largest reply header in front of power-of-two data. */
export const HEADROOM = 64;

export class BufferPool {
  readonly #free = new Map<number, ArrayBuffer[]>();
  #idleBytes = 0;
  readonly #maxPooledBytes: number;
  /** Buffers allocated so far (for tests and stats). */
  allocations = 0;

  constructor(options: { maxPooledBytes: number }) {
    this.#maxPooledBytes = options.maxPooledBytes;
  }

  /** A buffer of exactly `size` bytes (uninitialised) backed by a pooled allocation. */
  take(size: number): Buffer {
    const cls = sizeClass(size);
    const list = this.#free.get(cls);
    let ab = list?.pop();
    if (ab) this.#idleBytes -= ab.byteLength;
    else {
      ab = new ArrayBuffer(2 ** cls + HEADROOM);
      this.allocations++;
    }
    return Buffer.from(ab, 0, size);
  }

  /** Give back a buffer from take(); it must not be used afterwards. */
  give(buf: Buffer): void {
    const ab = buf.buffer;
    if (!(ab instanceof ArrayBuffer) || buf.byteOffset !== 0) return;
    const data = ab.byteLength - HEADROOM;
    if (data < 2 ** MIN_CLASS || (data & (data - 1)) !== 0) return;
    if (this.#idleBytes + ab.byteLength > this.#maxPooledBytes) return;
    const cls = Math.log2(data);
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(ab);
    this.#idleBytes += ab.byteLength;
  }

  get idleBytes(): number {
    return this.#idleBytes;
  }
}

/** The bytes a buffer of `size` from take() occupies: its size class. */
export function pooledSize(size: number): number {
  return 2 ** sizeClass(size) + HEADROOM;
}

function sizeClass(size: number): number {
  return Math.max(MIN_CLASS, Math.ceil(Math.log2(Math.max(1, size - HEADROOM))));
}
