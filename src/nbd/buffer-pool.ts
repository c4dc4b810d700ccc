// Reusable I/O buffers. A read reply is one buffer: the reply header, then
// the data read straight from the backend behind it, so a reply is a single
// write with no copy. Buffers come back when the transport has sent them.
// Sizes are rounded up to powers of two; at most `maxPooledBytes` stay idle.

const MIN_CLASS = 12; // 4 KiB

export class BufferPool {
  readonly #free = new Map<number, ArrayBuffer[]>();
  #idleBytes = 0;
  readonly #maxPooledBytes: number;

  constructor(options: { maxPooledBytes: number }) {
    this.#maxPooledBytes = options.maxPooledBytes;
  }

  /** A buffer of exactly `size` bytes (uninitialised) backed by a pooled allocation. */
  take(size: number): Buffer {
    const cls = sizeClass(size);
    const list = this.#free.get(cls);
    let ab = list?.pop();
    if (ab) this.#idleBytes -= ab.byteLength;
    else ab = new ArrayBuffer(2 ** cls);
    return Buffer.from(ab, 0, size);
  }

  /** Give back a buffer from take(); it must not be used afterwards. */
  give(buf: Buffer): void {
    const ab = buf.buffer;
    if (!(ab instanceof ArrayBuffer) || buf.byteOffset !== 0) return;
    const n = ab.byteLength;
    if (n < 2 ** MIN_CLASS || (n & (n - 1)) !== 0) return;
    if (this.#idleBytes + n > this.#maxPooledBytes) return;
    const cls = Math.log2(n);
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(ab);
    this.#idleBytes += n;
  }

  get idleBytes(): number {
    return this.#idleBytes;
  }
}

function sizeClass(size: number): number {
  return Math.max(MIN_CLASS, Math.ceil(Math.log2(Math.max(1, size))));
}
