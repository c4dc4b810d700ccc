// When to do a file read or write right on the event loop and when to hand
// it to libuv's thread pool. Pure: the caller passes the clock.
//
// Handing a 4 KiB read to the thread pool costs a thread wake-up per request
// (about 15 us of CPU measured on the 2-core development VM) while the read
// itself, served by the page cache, takes about 2 us; so calls are done
// synchronously by default. Node has no preadv2(RWF_NOWAIT) to ask "only if
// cached", so a call that took longer than memory speed allows is taken as a
// sign of real disk I/O. One slow call can be the scheduler on a shared
// machine; `slowLimit` of the last `window` calls being slow means the disk,
// and then every call goes to the thread pool (where slow disks work in
// parallel) for `asyncMs`, after which synchronous calls are tried again.

export interface IoModeOptions {
  /** Largest read done synchronously, in bytes. */
  syncMax: number;
  /**
   * Largest write done synchronously. Smaller than for reads: a large write
   * can be held up by the kernel's dirty-page throttling, and on the thread
   * pool that delay does not stop the event loop from receiving the next
   * request (measured: sequential writes of 256 KiB went faster that way).
   */
  syncWriteMax: number;
  window: number;
  slowLimit: number;
  asyncMs: number;
}

export const DEFAULT_IO_MODE: IoModeOptions = { syncMax: 1024 * 1024, syncWriteMax: 64 * 1024, window: 64, slowLimit: 8, asyncMs: 1000 };

export class IoModePolicy {
  readonly #o: IoModeOptions;
  #asyncUntil = 0;
  #calls = 0;
  #slow = 0;

  constructor(options: IoModeOptions = DEFAULT_IO_MODE) {
    this.#o = options;
  }

  /** Whether a read (or write) of `bytes` should run synchronously now. */
  sync(bytes: number, nowMs: number, write = false): boolean {
    if (bytes > (write ? this.#o.syncWriteMax : this.#o.syncMax)) return false;
    if (this.#asyncUntil === 0) return true;
    if (nowMs < this.#asyncUntil) return false;
    this.#asyncUntil = 0;
    return true;
  }

  /** Records a synchronous call; true when it switched to the thread pool. */
  took(ms: number, bytes: number, nowMs: number): boolean {
    this.#calls++;
    // Memory speed: well under 50 us plus 1 us per KiB.
    const slow = ms > 0.05 + bytes / (1024 * 1000);
    if (slow && ++this.#slow >= this.#o.slowLimit) {
      this.#asyncUntil = nowMs + this.#o.asyncMs;
      this.#calls = this.#slow = 0;
      return true;
    }
    if (this.#calls >= this.#o.window) this.#calls = this.#slow = 0;
    return false;
  }

  get asyncUntil(): number {
    return this.#asyncUntil;
  }
}
