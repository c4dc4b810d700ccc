// Holding TCP's retransmissions inside the tunnel while the cable is out, so
// that the disk's connection resumes as soon as the cable is back.
//
// The disk's TCP connection runs inside the WireGuard tunnel, which sees no
// cable: while it is out, every retransmission "succeeds" (WireGuard takes
// the packet and its UDP datagram is lost on the dead link), so TCP doubles
// its retransmission timeout each time (0.2, 0.4 ... 51 s, up to 120 s). When
// the cable comes back the next try may be a minute away: measured in the
// end-to-end cable scenario, 4 to 58 s after a 60 s pull.
//
// Linux retransmits differently when the packet cannot even leave the host:
// a retransmission the local queue drops (tcp_retransmit_timer, "local
// congestion") is tried again every 500 ms (TCP_RESOURCE_PROBE_INTERVAL)
// without doubling the timeout or counting as a retry. So while the link
// under the tunnel has no carrier, the tunnel gets a queue that drops every
// packet (`tc qdisc replace dev TUNNEL root pfifo limit 0`); once the carrier
// is back, the queue goes (`tc qdisc del`), and the next probe, at most
// 500 ms away, gets through. TCP's time-based give-up (net.ipv4.tcp_retries2,
// about 15 min) is unchanged: the hold only keeps the timeout from growing.
// Only the carrier of the link itself is seen: a cable pulled behind a switch
// leaves it on, and TCP backs off as before.
//
// tc runs as one long-lived `tc -force -batch -` started while all is well:
// on the desktop the programs live on the laptop's disk, which hangs while
// the cable is out, so nothing may be started then (see resident.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Logger } from '../log';

/** The lines tc -batch is given: hold (drop every packet) and release. */
export function holdCommand(tunnel: string): string {
  return `qdisc replace dev ${tunnel} root pfifo limit 0`;
}
export function releaseCommand(tunnel: string): string {
  return `qdisc del dev ${tunnel} root`;
}

export type HoldEvent = { kind: 'hold'; link: string } | { kind: 'release'; link: string; afterMs: number };

/**
 * Pure: fed the carrier of the tunnel's link (true, false, or undefined when
 * unknown) and the time, says when to hold and when to release.
 */
export class HoldTracker {
  #heldSince: number | undefined;
  #link = '';

  /** `held`: a hold found in place at start (left by a watch that died), released once the carrier is there. */
  constructor(held?: { link: string; since: number }) {
    if (held) {
      this.#heldSince = held.since;
      this.#link = held.link;
    }
  }

  feed(link: string | undefined, carrier: boolean | undefined, nowMs: number): HoldEvent | undefined {
    if (this.#heldSince === undefined) {
      if (link === undefined || carrier !== false) return undefined;
      this.#heldSince = nowMs;
      this.#link = link;
      return { kind: 'hold', link };
    }
    // Held: released once that link (or the link the tunnel now uses) has carrier, or is gone.
    if (link === this.#link && carrier === false) return undefined;
    const afterMs = nowMs - this.#heldSince;
    this.#heldSince = undefined;
    return { kind: 'release', link: this.#link, afterMs };
  }

  get held(): boolean {
    return this.#heldSince !== undefined;
  }
}

/** Whether `tc qdisc show dev TUNNEL` shows the hold (a root pfifo of limit 0). */
export function showsHold(qdiscShow: string): boolean {
  return /^qdisc pfifo \S+ root\b.*\blimit 0p?\b/m.test(qdiscShow);
}

/** Where the lines for tc go. */
export interface TcBatch {
  send(line: string): void;
  /** The process's pid (its mapped files are kept in memory by the caller). */
  readonly pid: number | undefined;
  close(): Promise<void>;
}

/** `tc -force -batch -`: one process for the watch's life; its complaints go to the log. */
export function startTcBatch(log: Logger, program = 'tc'): TcBatch {
  const child: ChildProcess = spawn(program, ['-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let exited = false;
  const closed = new Promise<void>((resolve) => child.on('close', () => ((exited = true), resolve())));
  child.on('error', (err: Error) => log.warn(`cannot run ${program}: ${err.message}; the disk's connection backs off as usual while the cable is out`));
  child.stdin!.on('error', () => undefined);
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => {
    for (const line of text.split('\n')) if (line.trim()) log.warn(`tc: ${line.trim()}`);
  });
  return {
    pid: child.pid,
    send(line) {
      if (!exited) child.stdin!.write(`${line}\n`);
    },
    async close() {
      child.stdin!.end();
      await closed;
    },
  };
}

export interface RetransmitHoldOptions {
  /** The tunnel interface the disk's connection runs through. */
  tunnel: string;
  /** The link the tunnel's packets leave by, when known: its carrier decides. */
  link: () => string | undefined | Promise<string | undefined>;
  tc: Pick<TcBatch, 'send'>;
  /** /sys/class/net, or a directory shaped like it (tests). */
  sysClassNet?: string;
  /** How often the carrier is read (default 250 ms). */
  intervalMs?: number;
  now?: () => number;
  onEvent?: (event: HoldEvent) => void;
  /** A hold is in place already (showsHold), on this link: released once it has carrier. */
  leftover?: string;
}

async function readCarrier(sys: string, link: string): Promise<boolean | undefined> {
  // Reading carrier of an interface that is down fails with EINVAL: unknown.
  const text = await readFile(posix.join(sys, link, 'carrier'), 'utf8').catch(() => undefined);
  return text === undefined ? undefined : text.trim() === '0' ? false : text.trim() === '1' ? true : undefined;
}

/** Reads the link's carrier every `intervalMs`; holds while it is off. stop() releases a hold. */
export function holdRetransmitsWhileUnplugged(o: RetransmitHoldOptions, deps: { signal: AbortSignal }): { stop(): void } {
  const sys = o.sysClassNet ?? '/sys/class/net';
  const now = o.now ?? Date.now;
  const tracker = new HoldTracker(o.leftover !== undefined ? { link: o.leftover, since: now() } : undefined);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const apply = (event: HoldEvent | undefined): void => {
    if (!event) return;
    o.tc.send(event.kind === 'hold' ? holdCommand(o.tunnel) : releaseCommand(o.tunnel));
    o.onEvent?.(event);
  };
  const tick = async (): Promise<void> => {
    const link = await o.link();
    const carrier = link === undefined ? undefined : await readCarrier(sys, link);
    if (stopped) return;
    apply(tracker.feed(link, carrier, now()));
    timer = setTimeout(() => void tick(), o.intervalMs ?? 250);
  };
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    if (timer) clearTimeout(timer);
    if (tracker.held) apply(tracker.feed(undefined, undefined, now()));
  };
  deps.signal.addEventListener('abort', stop, { once: true });
  void tick();
  return { stop };
}
