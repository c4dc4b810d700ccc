// Hole punching and range zeroing go through fallocate(1) (Node has no
// fallocate()), one child process per range. This queue runs at most
// `concurrency` of them at a time, whatever the clients send, and merges
// ranges that wait with the same mode when they overlap or touch: 300
// adjacent trims in one packet (a desktop's fstrim) become a handful of
// runs, not 300 processes at once. Each caller learns whether the run that
// covered its range succeeded. Pure scheduling: the run itself is passed in.

export type FallocateMode = '--punch-hole' | '--zero-range';

/** Runs fallocate on [offset, offset+length); false when it could not. */
export type FallocateRun = (mode: FallocateMode, offset: number, length: number) => Promise<boolean>;

interface Waiting {
  start: number;
  end: number;
  callers: Array<(ok: boolean) => void>;
}

export class FallocateQueue {
  readonly #run: FallocateRun;
  readonly #concurrency: number;
  /** Waiting ranges per mode, sorted by start, disjoint and not touching. */
  readonly #waiting = new Map<FallocateMode, Waiting[]>([
    ['--punch-hole', []],
    ['--zero-range', []],
  ]);
  #preferZero = false;
  #running = 0;
  /** Runs started so far (for tests and stats). */
  runs = 0;

  constructor(run: FallocateRun, concurrency = 2) {
    this.#run = run;
    this.#concurrency = concurrency;
  }

  get running(): number {
    return this.#running;
  }

  submit(mode: FallocateMode, offset: number, length: number): Promise<boolean> {
    return new Promise((resolve) => {
      this.#add(this.#waiting.get(mode)!, offset, offset + length, resolve);
      this.#startMore();
    });
  }

  #add(list: Waiting[], start: number, end: number, caller: (ok: boolean) => void): void {
    // First waiting range that ends at or after `start`: it may touch or overlap.
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid]!.end < start) lo = mid + 1;
      else hi = mid;
    }
    const merged: Waiting = { start, end, callers: [caller] };
    let j = lo;
    while (j < list.length && list[j]!.start <= merged.end) {
      const w = list[j]!;
      merged.start = Math.min(merged.start, w.start);
      merged.end = Math.max(merged.end, w.end);
      for (const c of w.callers) merged.callers.push(c);
      j++;
    }
    list.splice(lo, j - lo, merged);
  }

  #next(): [FallocateMode, Waiting] | undefined {
    const order: FallocateMode[] = this.#preferZero ? ['--zero-range', '--punch-hole'] : ['--punch-hole', '--zero-range'];
    for (const mode of order) {
      const w = this.#waiting.get(mode)!.shift();
      if (w) {
        this.#preferZero = mode === '--punch-hole';
        return [mode, w];
      }
    }
    return undefined;
  }

  #startMore(): void {
    while (this.#running < this.#concurrency) {
      const job = this.#next();
      if (!job) return;
      const [mode, w] = job;
      this.#running++;
      this.runs++;
      this.#run(mode, w.start, w.end - w.start)
        .catch(() => false)
        .then((ok) => {
          this.#running--;
          for (const c of w.callers) c(ok);
          this.#startMore();
        });
    }
  }
}
