// Whether the desktop is still heard: the bytes the laptop's WireGuard end
// received from it, read every few seconds. The desktop's side sends a
// keepalive at least every 15 s (persistent-keepalive), so a count that
// stands still for longer means the cable is out or the desktop is off;
// the two look the same from here. Nothing is ended: the disk stays served
// for the desktop to come back, and the console says what is going on.

export type SilenceEvent = { kind: 'silent'; forMs: number } | { kind: 'heard'; afterMs: number };

/** Pure: fed the received-byte count and the time, says when silence starts and ends. */
export class SilenceTracker {
  readonly #silentAfterMs: number;
  #count: number | undefined;
  #lastChangeAt = 0;
  #silent = false;

  constructor(silentAfterMs: number) {
    this.#silentAfterMs = silentAfterMs;
  }

  /** `count` undefined: no peer (yet); that resets the tracker. */
  feed(count: number | undefined, nowMs: number): SilenceEvent | undefined {
    if (count === undefined) {
      this.#count = undefined;
      this.#silent = false;
      return undefined;
    }
    if (this.#count === undefined || count !== this.#count) {
      const wasSilent = this.#silent;
      const since = this.#lastChangeAt;
      this.#count = count;
      this.#lastChangeAt = nowMs;
      this.#silent = false;
      return wasSilent ? { kind: 'heard', afterMs: nowMs - since } : undefined;
    }
    if (!this.#silent && nowMs - this.#lastChangeAt >= this.#silentAfterMs) {
      this.#silent = true;
      return { kind: 'silent', forMs: nowMs - this.#lastChangeAt };
    }
    return undefined;
  }

  get silent(): boolean {
    return this.#silent;
  }
}

export interface SilenceWatchOptions {
  /** The bytes received from the desktop so far, or undefined when there is none. */
  received: () => Promise<number | undefined>;
  intervalMs: number;
  silentAfterMs: number;
  onEvent: (event: SilenceEvent) => void;
}

/** Polls `received` until the signal aborts. */
export function watchSilence(options: SilenceWatchOptions, deps: { signal: AbortSignal }): { stop(): void } {
  const tracker = new SilenceTracker(options.silentAfterMs);
  let running: Promise<void> | undefined;
  const read = async (): Promise<void> => {
    const event = tracker.feed(await options.received().catch(() => undefined), Date.now());
    if (event) options.onEvent(event);
  };
  // One reading at a time: a slow `wg show` is not stacked up.
  const tick = (): Promise<void> => (running ??= read().finally(() => (running = undefined)));
  const timer = setInterval(() => void tick().catch(() => undefined), options.intervalMs);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  deps.signal.addEventListener('abort', stop, { once: true });
  return { stop };
}
