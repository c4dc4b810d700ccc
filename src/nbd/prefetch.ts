// The work behind NBD_CMD_CACHE: reading ranges ahead into the page cache,
// in the background, one range at a time through one small scratch buffer.
// The spec leaves all of it to the server ("it is unspecified what the
// server's actual caching mechanism is (if any), whether there is a limit on
// how much can be cached at once ... the server MAY send a reply prior to the
// requested area being fully cached"), so requests are answered at once and
// the work stays bounded whatever a client asks: ranges waiting are merged
// and capped in number, and a range read in the last moments is not read
// again (500 requests for the same 64 MiB cost one read of it, not 32 GB).

import { RangeSet } from './range-set';

export interface PrefetchOptions {
  /** Bytes per read (the one scratch buffer). */
  chunk: number;
  /** At most this many separate ranges wait; further requests are dropped (they are hints). */
  maxQueued: number;
  /** A range read this recently (ms) is not read again. */
  recentMs: number;
}

export const DEFAULT_PREFETCH: PrefetchOptions = { chunk: 256 * 1024, maxQueued: 16, recentMs: 2000 };

/** Most separate ranges remembered as recently read. */
const MAX_RECENT = 256;

export class Prefetcher {
  readonly #read: (buf: Buffer, position: number) => Promise<void>;
  readonly #now: () => number;
  readonly #o: PrefetchOptions;
  readonly #queue = new RangeSet();
  readonly #recent = new RangeSet();
  #recentSince = 0;
  #running: Promise<void> | undefined;
  #stopped = false;
  /** Bytes read so far (for tests and stats). */
  bytesRead = 0;

  constructor(read: (buf: Buffer, position: number) => Promise<void>, options: PrefetchOptions = DEFAULT_PREFETCH, now: () => number = Date.now) {
    this.#read = read;
    this.#o = options;
    this.#now = now;
  }

  /** Asks for [offset, offset+length) to be read ahead; returns at once. */
  request(offset: number, length: number): void {
    if (this.#stopped || length <= 0) return;
    this.#expireRecent();
    const end = offset + length;
    if (this.#recent.covers(offset, end)) return;
    if (this.#queue.count >= this.#o.maxQueued) return;
    this.#queue.add(offset, end);
    this.#running ??= this.#run().finally(() => (this.#running = undefined));
  }

  /** Resolves when nothing is waiting or being read. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** No more reading; resolves once the read in progress (if any) is over. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#queue.clear();
    await this.idle();
  }

  #expireRecent(): void {
    const now = this.#now();
    if (now - this.#recentSince > this.#o.recentMs || this.#recent.count > MAX_RECENT) {
      this.#recent.clear();
      this.#recentSince = now;
    }
  }

  async #run(): Promise<void> {
    const buf = Buffer.allocUnsafe(this.#o.chunk);
    for (let range = this.#queue.shift(); range && !this.#stopped; range = this.#queue.shift()) {
      const [start, end] = range;
      // Remembered from the start, so that asking again while it is read adds nothing.
      this.#expireRecent();
      this.#recent.add(start, end);
      try {
        for (let pos = start; pos < end && !this.#stopped; pos += buf.length) {
          const n = Math.min(buf.length, end - pos);
          await this.#read(n === buf.length ? buf : buf.subarray(0, n), pos);
          this.bytesRead += n;
        }
      } catch {
        // A hint that could not be followed changes nothing for the client.
      }
    }
  }
}
