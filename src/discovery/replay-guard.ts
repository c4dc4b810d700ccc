// Freshness of authentic datagrams: a timestamp window plus a memory of the
// nonces seen inside it. Pure: the caller passes the current time.
//
// Memory is bounded: when more than `capacity` nonces are remembered, the
// oldest is forgotten and the window's lower edge moves up to its timestamp,
// so a forgotten nonce can never be accepted again (it is then "stale").

export type Freshness = 'fresh' | 'stale' | 'replay';

export interface ReplayGuardOptions {
  /** Accepted distance between a timestamp and now, ms. */
  maxSkewMs: number;
  /** Most nonces remembered. */
  capacity?: number;
  /**
   * Timestamps at or below this are stale from the start: the newest
   * timestamp a previous run accepted, so that a request captured before a
   * restart is not accepted again after it (the nonces are forgotten).
   */
  floorMs?: number;
}

export class ReplayGuard {
  readonly #maxSkewMs: number;
  readonly #capacity: number;
  /** nonce (hex) -> timestamp, in insertion order. */
  readonly #seen = new Map<string, number>();
  /** Timestamps at or below this are stale: their nonces may have been forgotten. */
  #floor = -Infinity;
  /** The newest timestamp accepted (or the floor given), for the next run's floor. */
  #newest = -Infinity;

  constructor(options: ReplayGuardOptions) {
    this.#maxSkewMs = options.maxSkewMs;
    this.#capacity = options.capacity ?? 4096;
    if (options.floorMs !== undefined) this.#floor = this.#newest = options.floorMs;
  }

  get newestMs(): number {
    return this.#newest;
  }

  get size(): number {
    return this.#seen.size;
  }

  check(timestampMs: number, nonce: Uint8Array, nowMs: number): Freshness {
    this.#prune(nowMs);
    if (Math.abs(timestampMs - nowMs) > this.#maxSkewMs || timestampMs <= this.#floor) return 'stale';
    const key = Buffer.from(nonce).toString('hex');
    if (this.#seen.has(key)) return 'replay';
    this.#seen.set(key, timestampMs);
    if (timestampMs > this.#newest) this.#newest = timestampMs;
    while (this.#seen.size > this.#capacity) {
      const [oldest, ts] = this.#seen.entries().next().value as [string, number];
      this.#seen.delete(oldest);
      this.#floor = Math.max(this.#floor, ts);
    }
    return 'fresh';
  }

  #prune(nowMs: number): void {
    const limit = nowMs - this.#maxSkewMs;
    // Entries are roughly in timestamp order; drop expired ones from the front.
    for (const [k, ts] of this.#seen) {
      if (ts >= limit) break;
      this.#seen.delete(k);
    }
  }
}
