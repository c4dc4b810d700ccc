// The client side of discovery: sends FIND_SERVER on every interface at once,
// every retryIntervalMs, each with a fresh nonce, and resolves with the first
// authentic SERVER_HELLO that answers one of them.
import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { NetworkControl } from '../netif/interfaces';
import { decodeDiscovery, encodeDiscovery, DISCOVERY_MAX_SIZE, type DropReason } from './datagram';
import { newCounters, type DiscoveryCounters } from './responder';

export interface FindServerOptions {
  key: Uint8Array;
  port: number;
  retryIntervalMs: number;
  /** 0: forever. */
  timeoutMs: number;
  clientName: string;
  /** Interfaces to send on, read again every round (new ones join in). */
  interfaces: () => readonly string[];
  ipv4Broadcast?: boolean;
  net: NetworkControl;
  now?: () => number;
}

export interface FoundServer {
  /** Address to connect to, with its zone for link-local IPv6 (fe80::1%eth0). */
  address: string;
  family: 'IPv6' | 'IPv4';
  /** The interface the answer came in on. */
  interface: string;
  /** That interface's MAC address. */
  mac: string | undefined;
  payloadPort: number;
  serverName: string;
  busy: boolean;
  /** Datagrams sent before the answer, and what was dropped. */
  sent: number;
  counters: DiscoveryCounters;
}

/** Interface of an IPv4 sender: the one whose subnet contains it. */
function ipv4Interface(address: string, names: readonly string[], net: NetworkControl): string | undefined {
  const toInt = (a: string): number => a.split('.').reduce((acc, x) => (acc << 8) | Number(x), 0) >>> 0;
  const addr = toInt(address);
  for (const name of names) {
    for (const a of net.ipv4(name)) {
      const mask = toInt(a.netmask);
      if ((toInt(a.address) & mask) === (addr & mask)) return name;
    }
  }
  return undefined;
}

export async function findServer(options: FindServerOptions, ctx: { log: Logger; signal?: AbortSignal }): Promise<FoundServer> {
  const log = ctx.log;
  if (ctx.signal?.aborted) throw new StiefelError('E_ABORTED', 'discovery was interrupted');
  const now = options.now ?? Date.now;
  const counters = newCounters();
  /** Nonces of our requests (hex), bounded: a reply must name one. */
  const outstanding = new Set<string>();
  const seenReplies = new Set<string>();
  const sendErrors = new Map<string, string>();
  let sent = 0;

  const sockets: Socket[] = [];
  const open = (type: 'udp6' | 'udp4'): Promise<Socket | undefined> =>
    new Promise((resolve) => {
      const s = createSocket({ type, ipv6Only: type === 'udp6' });
      s.once('error', (err) => {
        log.debug(`no ${type} discovery socket: ${err.message}`);
        s.close();
        resolve(undefined);
      });
      s.bind({ port: 0, address: type === 'udp6' ? '::' : '0.0.0.0' }, () => {
        s.removeAllListeners('error');
        s.on('error', (err) => log.debug(`discovery socket error: ${err.message}`));
        if (type === 'udp4') s.setBroadcast(true);
        sockets.push(s);
        resolve(s);
      });
    });
  const [udp6, udp4] = await Promise.all([open('udp6'), options.ipv4Broadcast === false ? undefined : open('udp4')]);
  if (!udp6 && !udp4) throw new StiefelError('E_DISCOVERY_SOCKET', 'cannot open a UDP socket for discovery');

  let timer: NodeJS.Timeout | undefined;
  let deadline: NodeJS.Timeout | undefined;
  const cleanup = (): void => {
    if (timer) clearInterval(timer);
    if (deadline) clearTimeout(deadline);
    for (const s of sockets) s.close();
  };

  try {
    return await new Promise<FoundServer>((resolve, reject) => {
      const drop = (reason: DropReason, from: string): void => {
        counters[reason] += 1;
        log.debug(`dropped datagram from ${from}: ${reason}`);
      };
      const onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
        if (msg.length > DISCOVERY_MAX_SIZE) return drop('foreign', rinfo.address);
        const r = decodeDiscovery(msg, options.key);
        if (!r.ok) return drop(r.reason, rinfo.address);
        const m = r.message;
        if (m.type !== 'server-hello') return drop('unexpected', rinfo.address);
        // Bound to one of our requests, or not for us (an old reply replayed).
        if (!outstanding.has(m.requestNonce.toString('hex'))) return drop('unexpected', rinfo.address);
        const id = m.nonce.toString('hex');
        if (seenReplies.has(id)) return drop('replay', rinfo.address);
        seenReplies.add(id);
        let address = rinfo.address;
        let iface: string | undefined;
        if (rinfo.family === 'IPv6') {
          const pct = address.indexOf('%');
          iface = pct >= 0 ? address.slice(pct + 1) : undefined;
        } else {
          iface = ipv4Interface(address, options.interfaces(), options.net);
        }
        if (!iface) {
          log.debug(`answer from ${address} on an unknown interface: ignored`);
          return drop('unexpected', rinfo.address);
        }
        if (rinfo.family === 'IPv6' && !address.includes('%')) address = `${address}%${iface}`;
        counters.answered += 1;
        void options.net.mac(iface).then((mac) =>
          resolve({
            address,
            family: rinfo.family === 'IPv6' ? 'IPv6' : 'IPv4',
            interface: iface!,
            mac,
            payloadPort: m.payloadPort,
            serverName: m.serverName,
            busy: m.busy,
            sent,
            counters,
          }),
        );
      };
      udp6?.on('message', onMessage);
      udp4?.on('message', onMessage);

      const request = (): Buffer => {
        const nonce = randomBytes(16);
        const hex = nonce.toString('hex');
        outstanding.add(hex);
        // Remember the last few thousand requests only.
        if (outstanding.size > 4096) outstanding.delete(outstanding.values().next().value as string);
        return encodeDiscovery({ type: 'find-server', timestampMs: now(), nonce, clientName: options.clientName }, options.key);
      };
      const sendTo = (socket: Socket, address: string, label: string): void => {
        sent += 1;
        socket.send(request(), options.port, address, (err) => {
          if (err) {
            // Links without carrier or address yet fail here; they are retried.
            if (sendErrors.get(label) !== err.message) log.debug(`cannot send discovery on ${label}: ${err.message}`);
            sendErrors.set(label, err.message);
          } else {
            sendErrors.delete(label);
          }
        });
      };
      const round = (): void => {
        for (const name of options.interfaces()) {
          if (udp6) sendTo(udp6, `ff02::1%${name}`, name);
          if (udp4) for (const a of options.net.ipv4(name)) sendTo(udp4, a.broadcast, `${name} (IPv4 ${a.broadcast})`);
        }
      };
      round();
      timer = setInterval(round, options.retryIntervalMs);

      if (options.timeoutMs > 0) {
        deadline = setTimeout(() => {
          const names = options.interfaces();
          const bad = counters['bad-tag'];
          const hint = bad > 0
            ? `; ${bad} answer(s) had a wrong tag: the server's secret differs from this one`
            : '; a server with a different secret would stay silent: check that both machines hold the same secret';
          reject(
            new StiefelError(
              'E_DISCOVERY_TIMEOUT',
              `no stiefelsystem server answered on ${names.length ? names.join(', ') : 'any interface (none is up)'} within ${options.timeoutMs / 1000} s${hint}`,
            ),
          );
        }, options.timeoutMs);
      }
      ctx.signal?.addEventListener('abort', () => reject(new StiefelError('E_ABORTED', 'discovery was interrupted')), { once: true });
    });
  } finally {
    cleanup();
  }
}
