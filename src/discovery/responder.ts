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
import { WarningLimiter } from '../warning-limiter';

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

export interface FindServerHandler {
  readonly counters: DiscoveryCounters;
  readonly warnings: WarningLimiter;
  /** The reply to send back to `from`, or undefined when the datagram is dropped. */
  handle(msg: Buffer, from: { address: string; port: number }): Buffer | undefined;
}

/** What the responder does with one datagram, apart from its sockets. */
export function createFindServerHandler(options: DiscoveryResponderOptions, log: Logger): FindServerHandler {
  const now = options.now ?? Date.now;
  const guard = new ReplayGuard({ maxSkewMs: options.maxClockSkewMs });
  const counters = newCounters();
  // A flood of forged datagrams from many (spoofed) senders must not flood the console.
  const warnings = new WarningLimiter({ now });

  const drop = (reason: DropReason, from: { address: string; port: number }): undefined => {
    counters[reason] += 1;
    log.debug(`dropped datagram from ${from.address} port ${from.port}: ${reason}`);
    const why = WARN_ABOUT[reason];
    if (why) for (const line of warnings.lines(`${reason} ${from.address}`, `ignored discovery from ${from.address}: ${reason} (${why})`)) log.warn(line);
    return undefined;
  };

  const handle = (msg: Buffer, from: { address: string; port: number }): Buffer | undefined => {
    if (msg.length > DISCOVERY_MAX_SIZE) return drop('foreign', from);
    const r = decodeDiscovery(msg, options.key);
    if (!r.ok) return drop(r.reason, from);
    const m = r.message;
    if (m.type !== 'find-server') return drop('unexpected', from);
    const freshness = guard.check(m.timestampMs, m.nonce, now());
    if (freshness !== 'fresh') return drop(freshness, from);
    counters.answered += 1;
    log.debug(`answered find-server from ${m.clientName || '?'} at ${from.address}`);
    options.onRequest?.({ address: from.address, clientName: m.clientName });
    return encodeDiscovery(
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
  };
  return { counters, warnings, handle };
}

export async function startDiscoveryResponder(
  options: DiscoveryResponderOptions,
  ctx: { log: Logger; signal?: AbortSignal },
): Promise<DiscoveryResponder> {
  const log = ctx.log;
  const handler = createFindServerHandler(options, log);
  const sockets: Socket[] = [];

  const onMessage = (socket: Socket) => (msg: Buffer, rinfo: RemoteInfo): void => {
    const reply = handler.handle(msg, rinfo);
    if (!reply) return;
    socket.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) log.debug(`cannot answer ${rinfo.address}: ${err.message}`);
    });
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
  return { counters: handler.counters, close };
}
