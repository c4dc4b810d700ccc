// What the laptop's console shows while a desktop uses its disk: a line a
// minute with who, for how long, and how much went each way (in all and in
// the last minute), so that a person looking at the laptop knows it is
// serving (and does not close its lid or pull its cable).
import { formatBinaryBytes } from '../progress';

export interface DiskTraffic {
  bytesRead: number;
  bytesWritten: number;
}

/** 45 s, 12 min, 3 h 5 min: how long a desktop has had the disk. */
export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 60) return `${min} min`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

/** Pure: the status line. */
export function diskStatusLine(o: { peer: string; forMs: number; total: DiskTraffic; lastMinute: DiskTraffic }): string {
  return (
    `serving the disk to the desktop at ${o.peer} for ${formatElapsed(o.forMs)}: ` +
    `read ${formatBinaryBytes(o.total.bytesRead)}, written ${formatBinaryBytes(o.total.bytesWritten)} ` +
    `(last minute: ${formatBinaryBytes(o.lastMinute.bytesRead)} read, ${formatBinaryBytes(o.lastMinute.bytesWritten)} written)`
  );
}

export interface DiskStatusOptions {
  traffic: () => DiskTraffic;
  /** The desktop holding the disk and since when, or undefined. */
  holder: () => { peer: string; since: number } | undefined;
  print: (line: string) => void;
  intervalMs?: number;
  now?: () => number;
}

/** Prints the status line every interval while a desktop holds the disk. */
export function watchDiskStatus(o: DiskStatusOptions, deps: { signal: AbortSignal }): { stop(): void; tick(): void } {
  const now = o.now ?? Date.now;
  let last: DiskTraffic | undefined;
  const tick = (): void => {
    const h = o.holder();
    const t = o.traffic();
    if (h) {
      const prev = last ?? t;
      o.print(diskStatusLine({ peer: h.peer, forMs: now() - h.since, total: t, lastMinute: { bytesRead: t.bytesRead - prev.bytesRead, bytesWritten: t.bytesWritten - prev.bytesWritten } }));
    }
    last = t;
  };
  const timer = setInterval(tick, o.intervalMs ?? 60_000);
  timer.unref();
  const stop = (): void => clearInterval(timer);
  deps.signal.addEventListener('abort', stop, { once: true });
  return { stop, tick };
}
