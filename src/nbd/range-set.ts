// A set of byte ranges [start, end), kept sorted, disjoint and merged where
// they overlap or touch. Pure.

export class RangeSet {
  readonly #ranges: Array<[number, number]> = [];

  /** Number of separate ranges. */
  get count(): number {
    return this.#ranges.length;
  }

  add(start: number, end: number): void {
    if (end <= start) return;
    const r = this.#ranges;
    // First range that ends at or after `start` (it may touch or overlap).
    const i = this.#firstEndingAtOrAfter(start);
    let s = start;
    let e = end;
    let j = i;
    while (j < r.length && r[j]![0] <= e) {
      s = Math.min(s, r[j]![0]);
      e = Math.max(e, r[j]![1]);
      j++;
    }
    r.splice(i, j - i, [s, e]);
  }

  /** Whether every byte of [start, end) is in the set. */
  covers(start: number, end: number): boolean {
    if (end <= start) return true;
    const i = this.#firstEndingAtOrAfter(start + 1);
    const x = this.#ranges[i];
    return x !== undefined && x[0] <= start && x[1] >= end;
  }

  /** Removes and returns the lowest range. */
  shift(): [number, number] | undefined {
    return this.#ranges.shift();
  }

  clear(): void {
    this.#ranges.length = 0;
  }

  #firstEndingAtOrAfter(pos: number): number {
    const r = this.#ranges;
    let lo = 0;
    let hi = r.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (r[mid]![1] < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
