// Warnings that a stranger on the cable can cause (forged datagrams, failed
// TLS handshakes) must neither flood the console of the machine serving a
// running OS's disk nor grow its memory: at most one line per sender and
// reason every `perKeyMs`, at most `perWindow` lines in all every `windowMs`
// (then one line saying how many were held back), about at most `maxKeys`
// senders remembered. Pure: time comes from `now`.

export interface WarningLimiterOptions {
  perKeyMs?: number;
  windowMs?: number;
  perWindow?: number;
  maxKeys?: number;
  now?: () => number;
}

export class WarningLimiter {
  readonly #perKeyMs: number;
  readonly #windowMs: number;
  readonly #perWindow: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  /** key -> when it was last shown, oldest first. */
  readonly #last = new Map<string, number>();
  #windowStart = -Infinity;
  #shownInWindow = 0;
  #held = 0;

  constructor(options: WarningLimiterOptions = {}) {
    this.#perKeyMs = options.perKeyMs ?? 10_000;
    this.#windowMs = options.windowMs ?? 10_000;
    this.#perWindow = options.perWindow ?? 10;
    this.#maxKeys = options.maxKeys ?? 1000;
    this.#now = options.now ?? Date.now;
  }

  /** Senders remembered now (bounded by maxKeys). */
  get size(): number {
    return this.#last.size;
  }

  /**
   * The lines to write for one warning about `key`: none (held back), the
   * warning, or first a line saying how many were held back before it.
   */
  lines(key: string, message: string): string[] {
    const t = this.#now();
    const last = this.#last.get(key);
    if (last !== undefined && last > t - this.#perKeyMs) return [];
    if (t - this.#windowStart >= this.#windowMs) {
      this.#windowStart = t;
      this.#shownInWindow = 0;
    }
    if (this.#shownInWindow >= this.#perWindow) {
      this.#held += 1;
      return [];
    }
    this.#shownInWindow += 1;
    this.#last.delete(key);
    this.#last.set(key, t);
    while (this.#last.size > this.#maxKeys) this.#last.delete(this.#last.keys().next().value as string);
    const out = this.#held > 0 ? [`${this.#held} more such warnings were held back (at most ${this.#perWindow} every ${Math.round(this.#windowMs / 1000)} s)`] : [];
    this.#held = 0;
    out.push(message);
    return out;
  }

  /** How many warnings were held back since the last line, and forgets them (for a summary at the end). */
  takeHeld(): number {
    const n = this.#held;
    this.#held = 0;
    return n;
  }
}
