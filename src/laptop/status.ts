// What the laptop serves, right now: the desktop holding the disk and since
// when, bytes each way and the rates of the last second, requests in flight
// and errors, the links (speed, MTU, carrier), the power supply, and the
// pairing code for a PXE desktop. Sampled once a second; `stiefelctl status`
// reads it through a local socket (one JSON object per connection), and
// formatStatus draws it for an 80x25 console.
import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { posix } from 'node:path';
import type { Logger } from '../log';
import { formatBinaryBytes } from '../progress';
import { powerState, readPowerSupplies, type PowerState } from './battery';
import { formatElapsed } from './disk-status';

/** Where `stiefelctl status` finds the running server. */
export const STATUS_SOCKET = '/run/stiefelsystem/status.sock';

export interface LinkStatus {
  name: string;
  /** Mbit/s, when the driver says (virtual NICs often do not). */
  speedMbps: number | null;
  mtu: number | null;
  carrier: boolean | null;
}

export interface DiskCounters {
  bytesRead: number;
  bytesWritten: number;
  inFlight: number;
  errors: number;
}

export interface ServerStatus {
  version: 1;
  server: string;
  /** ISO times. */
  startedAt: string;
  sampledAt: string;
  disk: { path: string; export: string } | null;
  desktop: { peer: string; since: string } | null;
  traffic: (DiskCounters & { readPerS: number; writtenPerS: number }) | null;
  links: LinkStatus[];
  power: PowerState & { mains: boolean | null };
  /** The code a PXE-booted desktop types, while PXE serves. */
  pairingCode: string | null;
}

/** Pure: the lines for a console of `width` columns (at most 10 of them). */
export function formatStatus(s: ServerStatus, now: number, width = 80): string[] {
  const fit = (t: string): string => (t.length <= width ? t : `${t.slice(0, width - 1)}…`);
  const lines = [`stiefelsystem: '${s.server}' serving since ${formatElapsed(now - Date.parse(s.startedAt))}`];
  if (s.disk) lines.push(`disk     ${s.disk.path} (export '${s.disk.export}')`);
  lines.push(s.desktop ? `desktop  ${s.desktop.peer}, for ${formatElapsed(now - Date.parse(s.desktop.since))}` : 'desktop  none connected');
  if (s.traffic) {
    const t = s.traffic;
    lines.push(`read     ${formatBinaryBytes(t.bytesRead)} (${formatBinaryBytes(t.readPerS)}/s)   written ${formatBinaryBytes(t.bytesWritten)} (${formatBinaryBytes(t.writtenPerS)}/s)`);
    lines.push(`requests ${t.inFlight} in flight, ${t.errors} ${t.errors === 1 ? 'error' : 'errors'}`);
  }
  const link = (l: LinkStatus): string =>
    `${l.name} ${l.carrier === false ? 'no carrier' : l.speedMbps ? `${l.speedMbps >= 1000 ? `${l.speedMbps / 1000} Gbit/s` : `${l.speedMbps} Mbit/s`}` : 'up'}${l.mtu ? `, MTU ${l.mtu}` : ''}`;
  lines.push(`links    ${s.links.length ? s.links.map(link).join('; ') : 'none'}`);
  const p = s.power;
  lines.push(
    `power    ${p.batteries.length === 0 ? 'no battery' : `${p.onBattery ? 'ON BATTERY' : 'on mains power'}${p.capacity !== undefined ? `, ${p.capacity} %` : ''}`}`,
  );
  if (s.pairingCode) lines.push(`pairing  code ${s.pairingCode} for a desktop that PXE-boots`);
  return lines.map(fit);
}

async function readNumber(path: string): Promise<number | null> {
  const t = await fs.readFile(path, 'utf8').catch(() => undefined);
  const n = t === undefined ? NaN : Number(t.trim());
  return Number.isFinite(n) ? n : null;
}

/** A link's speed, MTU and carrier from sysfs (speed -1 or unreadable: unknown). */
export async function readLink(name: string, sysClassNet = '/sys/class/net'): Promise<LinkStatus> {
  const dir = posix.join(sysClassNet, name);
  const speed = await readNumber(posix.join(dir, 'speed'));
  const carrier = await readNumber(posix.join(dir, 'carrier'));
  return { name, speedMbps: speed !== null && speed > 0 ? speed : null, mtu: await readNumber(posix.join(dir, 'mtu')), carrier: carrier === null ? null : carrier === 1 };
}

export interface StatusSources {
  server: string;
  startedAt: number;
  disk?: { path: string; export: string };
  counters?: () => DiskCounters;
  holder: () => { peer: string; since: number } | undefined;
  links: () => readonly string[];
  powerSupply: string;
  pairingCode: () => string | undefined;
  now?: () => number;
}

/** Takes a sample; the rates are against the one before it. */
export function statusSampler(src: StatusSources): () => Promise<ServerStatus> {
  const now = src.now ?? Date.now;
  let prev: { at: number; c: DiskCounters } | undefined;
  return async () => {
    const at = now();
    const c = src.counters?.();
    let traffic: ServerStatus['traffic'] = null;
    if (c) {
      const dt = prev ? Math.max(1, at - prev.at) / 1000 : 1;
      const base = prev?.c ?? c;
      traffic = { ...c, readPerS: Math.max(0, (c.bytesRead - base.bytesRead) / dt), writtenPerS: Math.max(0, (c.bytesWritten - base.bytesWritten) / dt) };
      prev = { at, c };
    }
    const supplies = await readPowerSupplies(src.powerSupply);
    const mains = supplies.filter((s) => s.type === 'Mains' || s.type === 'USB' || s.type === 'USB_PD');
    const h = src.holder();
    return {
      version: 1,
      server: src.server,
      startedAt: new Date(src.startedAt).toISOString(),
      sampledAt: new Date(at).toISOString(),
      disk: src.disk ?? null,
      desktop: h ? { peer: h.peer, since: new Date(h.since).toISOString() } : null,
      traffic,
      links: await Promise.all([...src.links()].sort().map((n) => readLink(n))),
      power: { ...powerState(supplies), mains: mains.length ? mains.some((s) => s.online === '1') : null },
      pairingCode: src.pairingCode() ?? null,
    };
  };
}

export interface StatusService {
  /** The latest sample (taken once a second). */
  latest(): ServerStatus | undefined;
  close(): Promise<void>;
}

/**
 * Samples once a second and answers every connection to `socketPath` with
 * the latest sample as one line of JSON (root only: the socket is 0600).
 */
export async function startStatusService(o: { sample: () => Promise<ServerStatus>; socketPath: string; intervalMs?: number }, ctx: { log: Logger; signal: AbortSignal }): Promise<StatusService> {
  let latest = await o.sample();
  const timer = setInterval(() => {
    o.sample().then(
      (s) => (latest = s),
      (err: Error) => ctx.log.debug(`status sample failed: ${err.message}`),
    );
  }, o.intervalMs ?? 1000);
  timer.unref();
  await fs.mkdir(posix.dirname(o.socketPath), { recursive: true, mode: 0o700 });
  await fs.rm(o.socketPath, { force: true });
  const server: Server = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.end(`${JSON.stringify(latest)}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await fs.chmod(o.socketPath, 0o600);
  server.on('error', (err) => ctx.log.warn(`status socket: ${err.message}`));
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      clearInterval(timer);
      server.close(() => resolve());
    }).then(() => fs.rm(o.socketPath, { force: true }));
    return closing;
  };
  ctx.signal.addEventListener('abort', () => void close(), { once: true });
  return { latest: () => latest, close };
}
