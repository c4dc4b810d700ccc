// The laptop's side (stiefelOS server role): bring every interface up (and
// new ones as they appear), answer discovery, serve the boot payload over
// TLS-PSK, and serve the disk, all to one desktop at a time.
import type { Config } from '../config/schema';
import { deriveSubKeys } from '../crypto/keys';
import { startDiscoveryResponder, type DiscoveryResponder } from '../discovery/responder';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { watchInterfaces, type InterfaceWatcher, type NetworkControl } from '../netif/interfaces';
import { busyMessage, ClientLock } from './client-lock';
import type { ManifestLink } from './manifest';
import { startPayloadServer, type PayloadServer } from './server';
import { FilesPayloadSource, type BootPayloadSource } from './source';

/** The disk server (NBD), started by the caller's factory with the lock's admission hook. */
export interface DiskService {
  readonly port: number;
  close(): Promise<void>;
}

export interface DiskServiceOptions {
  path: string;
  port: number;
  exportName: string;
  /** Called for every new connection: may this peer host use the disk now? */
  admit(peerHost: string): { ok: true } | { ok: false; message: string };
  /** Called when an admitted connection ends. */
  disconnected(peerHost: string): void;
}

export type StartDiskService = (options: DiskServiceOptions, ctx: { log: Logger; signal: AbortSignal }) => Promise<DiskService>;

export interface BootServerOptions {
  config: Config;
  secret: Buffer;
  serverName: string;
  net: NetworkControl;
  /** Defaults to the files in config `server.boot`. */
  source?: BootPayloadSource;
  /** Serves config `server.disk`; without it no disk is served. */
  startDisk?: StartDiskService;
  /** Per-boot link settings for the manifest (WireGuard, issue 6). */
  link?: (peer: { host: string; session: string }) => Promise<ManifestLink>;
}

export interface BootServer {
  readonly payload: PayloadServer;
  readonly discovery: DiscoveryResponder;
  readonly disk: DiskService | undefined;
  readonly lock: ClientLock;
  readonly interfaces: InterfaceWatcher;
  /** Resolves when the payload digests are computed (or rejects why not). */
  readonly payloadReady: Promise<void>;
  close(): Promise<void>;
}

/** "answered 3; dropped: replay 1, stale 2" (reasons that never happened left out). */
export function formatCounters(c: Readonly<Record<string, number>>): string {
  const dropped = Object.entries(c)
    .filter(([k, v]) => k !== 'answered' && v > 0)
    .map(([k, v]) => `${k} ${v}`);
  return `answered ${c.answered ?? 0}; dropped: ${dropped.length ? dropped.join(', ') : 'none'}`;
}

export async function startBootServer(o: BootServerOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<BootServer> {
  const { log, signal } = ctx;
  const cfg = o.config;
  const keys = deriveSubKeys(o.secret);
  let source = o.source;
  let payloadReady: Promise<void> = Promise.resolve();
  if (!source) {
    const boot = cfg.server.boot;
    if (!boot) {
      throw new StiefelError(
        'E_CONFIG',
        `config ${cfg.file ?? '(defaults)'}: server.boot is not set: name the laptop OS's kernel, initrd and cmdline there (see 'stiefelctl init')`,
      );
    }
    const files = new FilesPayloadSource(boot);
    source = files;
    const t0 = Date.now();
    payloadReady = files.prepare(signal).then(() => log.info(`boot payload ready: ${boot.kernel}, ${boot.initrd} (digests in ${((Date.now() - t0) / 1000).toFixed(1)} s)`));
  }
  const lock = new ClientLock({ handoffMs: cfg.server.handoffTimeoutS * 1000, idleMs: 30_000 });

  const closers: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    while (closers.length) await closers.pop()!().catch(() => undefined);
  };
  try {
    const interfaces = watchInterfaces(
      { interfaces: cfg.network.interfaces, exclude: cfg.network.exclude, intervalMs: cfg.network.watchIntervalMs },
      { log: log.child('netif'), signal, net: o.net, onUp: (name) => log.debug(`interface ${name} up`) },
    );
    closers.push(async () => interfaces.stop());
    await interfaces.ready;

    const payload = await startPayloadServer(
      {
        psk: keys.payloadPsk,
        manifestKey: keys.manifest,
        port: cfg.payload.port,
        serverName: o.serverName,
        source,
        nbd: cfg.server.nbd,
        lock,
        link: o.link,
      },
      { log: log.child('payload'), signal },
    );
    closers.push(() => payload.close());

    let disk: DiskService | undefined;
    if (cfg.server.disk && o.startDisk) {
      disk = await o.startDisk(
        {
          path: cfg.server.disk,
          port: cfg.server.nbd.port,
          exportName: cfg.server.nbd.export,
          admit: (peer) => {
            const d = lock.admitDisk(peer);
            if (d.ok) {
              log.info(`the desktop at ${peer} connected to the disk`);
              return { ok: true };
            }
            log.warn(`refused a disk connection from ${peer}: busy with ${d.owner.host}`);
            return { ok: false, message: busyMessage(d.owner) };
          },
          disconnected: (peer) => {
            lock.diskClosed(peer);
            if (lock.state === 'free') log.info(`the desktop at ${peer} disconnected from the disk`);
          },
        },
        { log: log.child('nbd'), signal },
      );
      const d = disk;
      closers.push(() => d.close());
    } else if (cfg.server.disk) {
      log.warn(`server.disk ${cfg.server.disk} is not served: no disk server given`);
    }

    const discovery = await startDiscoveryResponder(
      {
        key: keys.discovery,
        port: cfg.discovery.port,
        payloadPort: payload.port,
        serverName: o.serverName,
        maxClockSkewMs: cfg.discovery.maxClockSkewS * 1000,
        ipv4: cfg.discovery.ipv4Broadcast,
        isBusy: () => lock.busyFor(),
      },
      { log: log.child('discovery'), signal },
    );
    closers.push(async () => {
      await discovery.close();
      log.info(`discovery: ${formatCounters(discovery.counters)}`);
    });

    log.info(
      `serving '${o.serverName}': discovery on UDP ${cfg.discovery.port}, payload on HTTPS ${payload.port}${disk ? `, disk ${cfg.server.disk} on NBD ${disk.port}` : ''}; interfaces: ${[...interfaces.up].sort().join(', ') || '(none yet)'}`,
    );
    payloadReady.catch((err: Error) => log.warn(`the boot payload is not ready: ${err.message}`));
    signal.addEventListener('abort', () => void close(), { once: true });
    return { payload, discovery, disk, lock, interfaces, payloadReady, close };
  } catch (err) {
    await close();
    throw err;
  }
}
