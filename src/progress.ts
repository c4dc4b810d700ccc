// Download progress: bytes, rate and time left. A bar redrawn in place when
// stderr is a terminal; otherwise a plain line every few seconds (logs stay
// readable). The formatting is pure; the reporter takes the clock.

export interface ProgressSample {
  received: number;
  total: number;
  elapsedMs: number;
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

/** Sizes in binary units, as disk tools show them: "512 B", "195.7 MiB", "1.0 GiB". */
export function formatBinaryBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}` : `${m}:${String(s % 60).padStart(2, '0')}`;
}

/** "45.2 MB of 105.0 MB (43%), 312.4 MB/s, 0:01 left" */
export function formatProgressLine(p: ProgressSample): string {
  const secs = p.elapsedMs / 1000;
  const rate = secs > 0 ? p.received / secs : 0;
  const pct = p.total > 0 ? Math.floor((p.received / p.total) * 100) : 100;
  const left = rate > 0 ? (p.total - p.received) / rate : Infinity;
  const eta = p.received >= p.total ? `done in ${formatDuration(secs)}` : `${formatDuration(left)} left`;
  return `${formatBytes(p.received)} of ${formatBytes(p.total)} (${pct}%), ${formatBytes(rate)}/s, ${eta}`;
}

/** "[##########..........] " + the line */
export function formatProgressBar(p: ProgressSample, width = 24): string {
  const frac = p.total > 0 ? Math.min(1, p.received / p.total) : 1;
  const full = Math.round(frac * width);
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${formatProgressLine(p)}`;
}

/** Moves up one line and clears it: the bar's previous drawing is replaced. */
export const REDRAW_PREFIX = '\x1b[1A\x1b[2K';

export interface ProgressReporterOptions {
  /** Draws one line (the caller adds the newline). */
  write: (line: string) => void;
  tty: boolean;
  now?: () => number;
  /** Minimum time between two lines: 250 ms on a terminal, 2 s otherwise. */
  intervalMs?: number;
  label?: string;
}

export class ProgressReporter {
  readonly #o: ProgressReporterOptions;
  readonly #now: () => number;
  readonly #start: number;
  readonly #interval: number;
  #last = -Infinity;
  #drawn = false;
  #finished = false;

  constructor(options: ProgressReporterOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#start = this.#now();
    this.#interval = options.intervalMs ?? (options.tty ? 250 : 2000);
    // A plain line right at the start would say nothing (0 B/s); the first comes after an interval.
    if (!options.tty) this.#last = this.#start;
  }

  update(received: number, total: number): void {
    if (this.#finished) return;
    const t = this.#now();
    const complete = received >= total;
    if (!complete && t - this.#last < this.#interval) return;
    this.#last = t;
    const sample = { received, total, elapsedMs: t - this.#start };
    const label = this.#o.label ? `${this.#o.label} ` : '';
    if (this.#o.tty) {
      this.#o.write(`${this.#drawn ? REDRAW_PREFIX : ''}${label}${formatProgressBar(sample)}`);
      this.#drawn = true;
    } else {
      this.#o.write(`${label}${formatProgressLine(sample)}`);
    }
    if (complete) this.#finished = true;
  }
}
