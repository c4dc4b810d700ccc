// The server side of discovery: answers authentic, fresh FIND_SERVER
// datagrams on every interface (one IPv6 socket receives ff02::1 from all
// links; one IPv4 socket receives broadcasts). Everything else is dropped
// silently and counted.
import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { decodeDiscovery, encodeDiscovery, DISCOVERY_MAX_SIZE, type DropReason } from './datagram';
import { ReplayGuard } from './replay-guard';

export interface DiscoveryResponderOptions {
  /** Discovery sub-key (HKDF "discovery" label). */
  key: Uint8Array;
  port: number;
  /** HTTPS port announced in the reply. */
  payloadPort: number;
  serverName: string;
  maxClockSkewMs: number;
  /** Also listen for IPv4 broadcasts. */
  ipv4?: boolean;
  /** Whether the server is busy with another client now. */
  isBusy?: () => boolean;
  /** Clock, for tests: ms since the epoch. */
  now?: () => number;
  /** Called for every answered request (the autokexec trigger uses this). */
  onRequest?: (from: { address: string; clientName: string }) => void;
}

export type DiscoveryCounters = Record<DropReason | 'answered', number>;

export interface DiscoveryResponder {
  readonly counters: Readonly<DiscoveryCounters>;
  close(): Promise<void>;
}

export function newCounters(): DiscoveryCounters {
  return { answered: 0, truncated: 0, foreign: 0, version: 0, 'bad-tag': 0, malformed: 0, unexpected: 0, stale: 0, replay: 0 };
}

/** Explains a drop reason to the person reading the server's log. */
const WARN_ABOUT: Partial<Record<DropReason, string>> = {
  'bad-tag': 'a client with a different secret, or a tampered datagram',
  stale: "a replayed request, or a client whose clock is off (see discovery.max_clock_skew_s)",
  replay: 'a replayed request',
  version: 'a client speaking another discovery version: update stiefelsystem on both machines',
};

function bind(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    socket.once('error', onError);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

export async function startDiscoveryResponder(
  options: DiscoveryResponderOptions,
  ctx: { log: Logger; signal?: AbortSignal },
): Promise<DiscoveryResponder> {
  const log = ctx.log;
  const now = options.now ?? Date.now;
  const guard = new ReplayGuard({ maxSkewMs: options.maxClockSkewMs });
  const counters = newCounters();
  const lastWarn = new Map<string, number>();
  const sockets: Socket[] = [];

  const warnOnce = (reason: DropReason, from: string): void => {
    const why = WARN_ABOUT[reason];
    if (!why) return;
    // At most one line per reason and sender every 10 s.
    const k = `${reason} ${from}`;
    const t = now();
    if ((lastWarn.get(k) ?? -Infinity) > t - 10_000) return;
    lastWarn.set(k, t);
    log.warn(`ignored discovery from ${from}: ${reason} (${why})`);
  };

  const onMessage = (socket: Socket) => (msg: Buffer, rinfo: RemoteInfo): void => {
    const from = rinfo.address;
    const drop = (reason: DropReason): void => {
      counters[reason] += 1;
      log.debug(`dropped datagram from ${from} port ${rinfo.port}: ${reason}`);
      warnOnce(reason, from);
    };
    if (msg.length > DISCOVERY_MAX_SIZE) return drop('foreign');
    const r = decodeDiscovery(msg, options.key);
    if (!r.ok) return drop(r.reason);
    const m = r.message;
    if (m.type !== 'find-server') return drop('unexpected');
    const freshness = guard.check(m.timestampMs, m.nonce, now());
    if (freshness !== 'fresh') return drop(freshness);
    const reply = encodeDiscovery(
      {
        type: 'server-hello',
        timestampMs: now(),
        nonce: randomBytes(16),
        requestNonce: m.nonce,
        payloadPort: options.payloadPort,
        busy: options.isBusy?.() ?? false,
        serverName: options.serverName,
      },
      options.key,
    );
    socket.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) log.debug(`cannot answer ${from}: ${err.message}`);
    });
    counters.answered += 1;
    log.debug(`answered find-server from ${m.clientName || '?'} at ${from}`);
    options.onRequest?.({ address: from, clientName: m.clientName });
  };

  const open = async (type: 'udp6' | 'udp4', address: string): Promise<void> => {
    const socket = createSocket({ type, ipv6Only: type === 'udp6', reuseAddr: false });
    socket.on('message', onMessage(socket));
    socket.on('error', (err) => log.warn(`discovery socket error: ${err.message}`));
    try {
      await bind(socket, options.port, address);
    } catch (err) {
      socket.close();
      const code = (err as NodeJS.ErrnoException).code;
      const hint = code === 'EADDRINUSE' ? ': is another stiefelctl server running?' : '';
      throw new StiefelError('E_DISCOVERY_BIND', `cannot listen for discovery on UDP port ${options.port} (${type === 'udp6' ? 'IPv6' : 'IPv4'}): ${(err as Error).message}${hint}`, { cause: err });
    }
    sockets.push(socket);
  };

  try {
    await open('udp6', '::');
    if (options.ipv4 ?? true) await open('udp4', '0.0.0.0');
  } catch (err) {
    for (const s of sockets) s.close();
    throw err;
  }
  log.debug(`listening for discovery on UDP port ${options.port}`);

  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  };
  ctx.signal?.addEventListener('abort', () => void close(), { once: true });
  return { counters, close };
}
