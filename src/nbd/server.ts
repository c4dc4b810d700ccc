// Listens on TCP or a unix socket and runs one NbdSession per connection.
// Library code: takes (options, { log, signal }), never prints or exits.
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { dirname } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import type { Logger } from '../log';
import { unmapIPv4 } from '../netif/address';
import { MemoryBudget } from './budget';
import { BufferPool } from './buffer-pool';
import type { BlockSizeConstraints } from './codec';
import { formatListenAddress, nbdUri, type ListenAddress } from './listen';
import { exportTable, serveSocket, type ConnectionSettings } from './connection';
import { newSessionStats, type NbdExport, type NbdSession, type SessionStats } from './session';
import type { WorkerExport } from './worker-messages';
import { NbdWorkerPool } from './worker-pool';

export type { NbdExport, SessionStats };

/** See NbdServerOptions.keepAliveIdleMs. */
export const DEFAULT_KEEPALIVE_IDLE_MS = 11 * 60_000;

export interface NbdPeer {
  family: 'IPv4' | 'IPv6' | 'unix';
  /** IP address (IPv6 link-local with its %zone), or '' for a unix socket. */
  address: string;
  port: number;
}

/** `true` admits the peer; `{ refuse }` refuses it with a message the client shows. */
export type NbdAdmission = true | { refuse: string };

export interface NbdConnectionInfo {
  id: number;
  peer: NbdPeer;
  /** Date.now() when accepted. */
  connectedAt: number;
  /** Why the peer was refused, if it was. */
  refused?: string;
  /** Live counters of the session (bytes, requests, phase). */
  stats: SessionStats;
}

export interface NbdServerOptions {
  /** Exports; the first is the default one, also selected by the empty name. */
  exports: readonly NbdExport[];
  listen: ListenAddress;
  /**
   * Decides per connection, before the handshake. A refused client is told
   * why (NBD_REP_ERR_POLICY with the message on every option; a client using
   * NBD_OPT_EXPORT_NAME is disconnected); the connection ends when the
   * client gives up or the handshake times out.
   */
  admit?: (peer: NbdPeer) => NbdAdmission;
  onConnect?: (connection: NbdConnectionInfo) => void;
  onDisconnect?: (connection: NbdConnectionInfo, reason: string) => void;
  /** Advertised via NBD_INFO_BLOCK_SIZE. Default 1 / 4096 / 32 MiB. */
  blockSize?: Partial<BlockSizeConstraints>;
  /** Request and reply bytes held per connection before reading from it pauses. Default 64 MiB. */
  maxInflightBytes?: number;
  /**
   * Request and reply bytes held for all connections together; above it, a
   * connection holding more than its fair share is not read from. Default 256 MiB.
   */
  maxServerInflightBytes?: number;
  /**
   * TCP keepalive: how long a connection may be silent before the kernel
   * starts probing the peer, which then has about 10 s (Node 20's libuv: 10
   * probes 1 s apart; Node 18's: the kernel's 9 x 75 s) to answer before the
   * connection is given up. A pulled cable is exactly such a silence, and
   * the client cannot reconnect a running OS's disk by itself, so the
   * default, 11 min, outlasts the 10 min a pulled cable is to be survived.
   */
  keepAliveIdleMs?: number;
  /**
   * A new connection from a peer address that already has this many open
   * (admitted) ones replaces the oldest of them: the client gave that one
   * up and reconnected (the desktop's kernel after a pulled cable, through
   * stiefel-nbd-reconnect), while the server's end still looks alive. The
   * old one is cut, and the new one is served only once the old one's
   * requests have finished, so that nothing it still carries (a
   * retransmitted write) lands after what the new one writes. Only a
   * connection that received no request for `replaceSilentMs` is replaced
   * (the client gives a connection up only after its requests went
   * unanswered that long), so a client that simply opens more connections
   * (nbdcopy's four) keeps them all. Default: no limit. Not with `workers`.
   */
  maxConnectionsPerPeer?: number;
  /** See maxConnectionsPerPeer. Default 10 s. */
  replaceSilentMs?: number;
  /** A connection still negotiating after this long is closed. Default 30 s. */
  handshakeTimeoutMs?: number;
  /** How long close() waits for in-flight requests before cutting connections. Default 10 s. */
  closeTimeoutMs?: number;
  /**
   * Serve the connections in this many worker processes instead of this
   * one (worker-process.ts), so that one client's several connections use
   * several CPUs. Every export then needs `file`: each worker opens it again.
   * The memory budgets apply per worker (the server's divided among them).
   */
  workers?: { count: number; spawn: () => ChildProcess };
}

export interface NbdServerHandle {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: ListenAddress;
  /** NBD URI of the default export, for nbdinfo/nbdcopy/qemu. */
  readonly uri: string;
  /** A snapshot of the open connections. */
  connections(): NbdConnectionInfo[];
  /**
   * Stops listening, lets in-flight requests finish, closes every
   * connection. Resolves when no backend call is running any more; the
   * backends stay open for the caller to close.
   */
  close(): Promise<void>;
  /** Resolves when the server has closed (by close() or the abort signal). */
  readonly closed: Promise<void>;
}

export const DEFAULT_BLOCK_SIZE: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

export async function startNbdServer(options: NbdServerOptions, ctx: { log: Logger; signal?: AbortSignal }): Promise<NbdServerHandle> {
  const log = ctx.log;
  if (options.exports.length === 0) throw new StiefelError('E_NBD_NO_EXPORT', 'no export to serve');
  const blockSize = { ...DEFAULT_BLOCK_SIZE, ...options.blockSize };
  const exports = exportTable(options.exports);
  const pool = new BufferPool({ maxPooledBytes: 64 * 1024 * 1024 });
  const maxInflightBytes = options.maxInflightBytes ?? 64 * 1024 * 1024;
  const serverBudget = new MemoryBudget(options.maxServerInflightBytes ?? 256 * 1024 * 1024);
  const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 30_000;
  const keepAliveIdleMs = options.keepAliveIdleMs ?? DEFAULT_KEEPALIVE_IDLE_MS;
  const closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
  const settings: ConnectionSettings = { exports, blockSize, maxInflightBytes, serverBudget, pool, handshakeTimeoutMs };
  /** Open connections, by id. */
  const open = new Map<number, { info: NbdConnectionInfo; session?: NbdSession }>();
  let nextId = 1;
  let closing = false;
  let allSessionsDone: (() => void) | undefined;

  const ended = (id: number, reason: string): void => {
    const c = open.get(id);
    if (!c) return;
    open.delete(id);
    log.debug(`connection ${id} closed: ${reason}`);
    options.onDisconnect?.(c.info, reason);
    if (closing && open.size === 0) allSessionsDone?.();
  };
  const perPeer = options.maxConnectionsPerPeer;
  if (perPeer !== undefined && (!Number.isInteger(perPeer) || perPeer < 1)) throw new StiefelError('E_NBD_CONNECTIONS', `the connections per peer must be a whole number of at least 1, not ${perPeer}`);
  if (perPeer !== undefined && options.workers) throw new StiefelError('E_NBD_WORKER', 'a limit of connections per peer cannot be kept with worker processes; use one or the other');
  const workers = options.workers && (await startWorkers(options, settings, log, open, ended));
  const replaceSilentMs = options.replaceSilentMs ?? 10_000;
  /** The peer's open admitted connections beyond the limit, once a new one comes, of those silent long enough: oldest first. */
  const replaced = (peer: NbdPeer): NbdSession[] => {
    if (perPeer === undefined || peer.family === 'unix') return [];
    const same = [...open.values()].filter((c) => c.info.refused === undefined && c.info.peer.address === peer.address && c.session);
    const silent = same.filter((c) => Date.now() - c.info.stats.lastRequestAt >= replaceSilentMs);
    return silent.slice(0, Math.max(0, same.length - perPeer + 1)).map((c) => c.session!);
  };

  // Paused on connect: acceptedSocketTransport takes the socket over before anything is read.
  const server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) => {
    const peer = peerOf(socket, options.listen);
    const admission = options.admit ? options.admit(peer) : true;
    const refused = admission === true ? undefined : admission.refuse;
    // Set on the handle, which the transport's socket (or a worker's) takes over.
    socket.setNoDelay(true);
    if (peer.family !== 'unix') socket.setKeepAlive(true, keepAliveIdleMs);
    const info: NbdConnectionInfo = { id: nextId++, peer, connectedAt: Date.now(), stats: newSessionStats() };
    if (refused !== undefined) info.refused = refused;
    const who = peer.family === 'unix' ? 'unix socket' : formatListenAddress({ kind: 'tcp', host: peer.address, port: peer.port });
    log.debug(`connection ${info.id} from ${who}${refused !== undefined ? ` refused: ${refused}` : ''}`);
    if (workers) {
      open.set(info.id, { info });
      options.onConnect?.(info);
      workers.assign(socket, info.id, refused);
      return;
    }
    const serve = (): void => {
      const session = serveSocket(socket, settings, refused, log.child('conn'));
      info.stats = session.stats;
      open.set(info.id, { info, session });
      session.done.then((reason) => ended(info.id, reason));
    };
    const old = refused === undefined ? replaced(peer) : [];
    if (old.length === 0) {
      serve();
      options.onConnect?.(info);
      return;
    }
    // Counted as open from now on; its socket stays paused until the old ones are gone.
    open.set(info.id, { info });
    options.onConnect?.(info);
    log.info(`connection ${info.id} from ${who} replaces its older connection${old.length > 1 ? 's' : ''}, which the client gave up`);
    for (const o of old) o.destroy(`replaced by connection ${info.id} from the same peer`);
    void Promise.all(old.map((o) => o.done)).then(() => {
      if (closing) {
        socket.destroy();
        ended(info.id, 'server closing');
      } else serve();
    });
  });
  let address: ListenAddress;
  try {
    address = await listen(server, options.listen);
  } catch (err) {
    await workers?.stop();
    throw err;
  }
  server.on('error', (err) => log.warn(`NBD listener: ${err.message}`));
  log.debug(`listening on ${formatListenAddress(address)}`);

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  let closePromise: Promise<void> | undefined;

  const close = (): Promise<void> =>
    (closePromise ??= (async () => {
      closing = true;
      const stopped = new Promise<void>((r) => server.close(() => r()));
      const drained = new Promise<void>((r) => {
        allSessionsDone = r;
        if (open.size === 0) r();
      });
      for (const c of open.values()) c.session?.shutdown();
      workers?.shutdown();
      const timer = setTimeout(() => {
        for (const c of open.values()) c.session?.destroy('server closing');
        workers?.destroy('server closing');
      }, closeTimeoutMs);
      await drained;
      clearTimeout(timer);
      await stopped;
      await workers?.stop();
      if (address.kind === 'unix') fs.rmSync(address.path, { force: true });
      log.debug('NBD server closed');
      resolveClosed();
    })());

  if (ctx.signal) {
    if (ctx.signal.aborted) void close();
    else ctx.signal.addEventListener('abort', () => void close(), { once: true });
  }

  return {
    address,
    uri: nbdUri(address, ''),
    connections: () => [...open.values()].map((c) => c.info),
    close,
    closed,
  };
}

/** The worker processes, started before the server listens; a connection's counters come from its worker. */
async function startWorkers(
  options: NbdServerOptions,
  settings: ConnectionSettings,
  log: Logger,
  open: ReadonlyMap<number, { info: NbdConnectionInfo }>,
  ended: (id: number, reason: string) => void,
): Promise<NbdWorkerPool> {
  const w = options.workers!;
  if (!Number.isInteger(w.count) || w.count < 1) throw new StiefelError('E_NBD_WORKER', `the number of NBD worker processes must be a whole number of at least 1, not ${w.count}`);
  const files: WorkerExport[] = options.exports.map((e) => {
    const file = e.file;
    if (!file) throw new StiefelError('E_NBD_WORKER', `export '${e.name}' is not a file or block device a worker process can open`);
    return { name: e.name, description: e.description, path: file.path, readOnly: file.readOnly };
  });
  return NbdWorkerPool.start({
    count: w.count,
    spawn: w.spawn,
    init: {
      t: 'init',
      exports: files,
      blockSize: settings.blockSize,
      maxInflightBytes: settings.maxInflightBytes,
      maxServerInflightBytes: Math.max(settings.maxInflightBytes, Math.floor(settings.serverBudget.limit / w.count)),
      handshakeTimeoutMs: settings.handshakeTimeoutMs,
    },
    log,
    onStats: (id, stats) => {
      const c = open.get(id);
      if (c) Object.assign(c.info.stats, stats);
    },
    onDone: (id, reason, stats) => {
      const c = open.get(id);
      if (c && stats) Object.assign(c.info.stats, stats);
      ended(id, reason);
    },
  });
}

function peerOf(socket: net.Socket, listen: ListenAddress): NbdPeer {
  if (listen.kind === 'unix') return { family: 'unix', address: '', port: 0 };
  const family = socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4';
  const raw = socket.remoteAddress ?? '';
  const address = unmapIPv4(raw);
  return { family: address !== raw ? 'IPv4' : family, address, port: socket.remotePort ?? 0 };
}

async function listen(server: net.Server, where: ListenAddress): Promise<ListenAddress> {
  if (where.kind === 'unix') await clearStaleSocket(where.path);
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(listenError(where, err));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (where.kind === 'unix') server.listen({ path: where.path });
    else server.listen({ host: where.host, port: where.port });
  });
  if (where.kind === 'unix') return where;
  const a = server.address() as net.AddressInfo;
  return { kind: 'tcp', host: where.host, port: a.port };
}

/** A socket file left by a server that died is removed; a live one is "in use". */
async function clearStaleSocket(path: string): Promise<void> {
  if (!fs.existsSync(dirname(path))) {
    throw new StiefelError('E_NBD_LISTEN', `cannot listen on unix:${path}: the directory ${dirname(path)} does not exist; create it first`);
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new StiefelError('E_NBD_LISTEN', `cannot listen on unix:${path}: the path exists and is not a socket; choose another path`);
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect({ path }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
  if (live) throw new StiefelError('E_NBD_LISTEN', `cannot listen on unix:${path}: another server is using it; stop it or choose another path`);
  fs.rmSync(path, { force: true });
}

/** Why the kernel refused an address (EINVAL): a missing zone, or a zone naming no interface. */
function invalidAddressReason(where: ListenAddress): string {
  const host = where.kind === 'tcp' ? where.host : '';
  const zone = host.includes('%') ? host.slice(host.indexOf('%') + 1) : undefined;
  if (zone === undefined) return 'invalid address (a link-local address needs its %interface, e.g. fe80::1%eth0)';
  if (/^\d+$/.test(zone) || fs.existsSync(`/sys/class/net/${zone}`)) return `invalid address on interface ${zone}`;
  return `there is no network interface '${zone}'; see 'ip link' for the names`;
}

function listenError(where: ListenAddress, err: Error): StiefelError {
  const at = formatListenAddress(where);
  const code = errnoCode(err);
  const why: Record<string, string> = {
    EADDRINUSE: `cannot listen on ${at}: the address is already in use (another NBD server?); stop it or choose another with --listen`,
    EADDRNOTAVAIL: `cannot listen on ${at}: no network interface has that address; check it with 'ip address'`,
    EACCES: `cannot listen on ${at}: permission denied (ports below 1024 need root; a socket path needs a writable directory)`,
    ENOTFOUND: `cannot listen on ${at}: the host name does not resolve; give an IP address`,
    EAI_AGAIN: `cannot listen on ${at}: the host name does not resolve; give an IP address`,
    ENOENT: `cannot listen on ${at}: the directory does not exist; create it first`,
    EINVAL: `cannot listen on ${at}: ${invalidAddressReason(where)}`,
    ENODEV: `cannot listen on ${at}: no such network interface`,
  };
  return new StiefelError('E_NBD_LISTEN', why[code ?? ''] ?? `cannot listen on ${at}: ${err.message}`, { cause: err });
}
