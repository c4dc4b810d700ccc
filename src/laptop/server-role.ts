// The laptop's side (stiefelOS server role): bring every interface up (and
// new ones as they appear), answer discovery, serve the boot payload over
// TLS-PSK, and serve the disk, all to one desktop at a time.
import { setMaxListeners } from 'node:events';
import type { Config } from '../config/schema';
import { deriveSubKeys } from '../crypto/keys';
import { startDiscoveryResponder, type DiscoveryResponder } from '../discovery/responder';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { watchInterfaces, type InterfaceWatcher, type NetworkControl } from '../netif/interfaces';
import { busyMessage, ClientLock } from './client-lock';
import type { ManifestLink } from '../payload/manifest';
import { startPayloadServer, type PayloadServer } from './payload-server';
import { FilesPayloadSource, type BootPayloadSource } from './payload-source';
import { BootEntriesPayloadSource } from './boot-entries-source';
import { startWireGuardServer, WG_INTERFACE, type WireGuardServer } from '../wireguard/link';
import { watchSilence } from './silence-watch';
import { watchBattery, type Beeper } from './battery';
import { watchDiskStatus } from './disk-status';
import { formatStatus, STATUS_SOCKET, startStatusService, statusSampler, type DiskCounters, type StatusService } from './status';
import type { ConsolePanel } from './console-panel';
import { systemRunner, type CommandRunner } from '../disk/runner';
import type { PassphraseProvider } from '../disk/passphrase';
import { resolveDisk } from '../disk/find-disk';
import { checkDiskHealth } from '../disk/clean-check';
import { deviceSize, readRange } from '../disk/read-range';
import { runChecked } from '../disk/runner';
import { kexecTools } from '../kexec/kexec';
import { startGoodbyeListener, type GoodbyeListener } from './goodbye';
import { findPxeImage, startPxeRole, type PxeRole } from './pxe';
import { createWayBack, type ConsoleIO, type WayBack, type WayBackActions } from './way-back';

/**
 * How often the bytes received from the desktop through the tunnel are read,
 * and how long they may stand still before the console says so: the
 * desktop's side sends a WireGuard keepalive every 15 s at the least.
 */
const SILENCE_POLL_MS = 5_000;
/** The PXE boot services' files: dnsmasq's configurations, leases and TFTP root. */
const PXE_RUN_DIR = '/run/stiefelsystem-pxe';
const SILENT_AFTER_MS = 30_000;

/** The disk server (NBD), started by the caller's factory with the lock's admission hook. */
export interface DiskService {
  readonly port: number;
  /** The disk's logical block size (its partition table counts in it). */
  readonly blockSize: number;
  /** Bytes moved so far by the connections of admitted desktops (open and closed), requests in flight, errors. */
  traffic(): DiskCounters;
  close(): Promise<void>;
}

export interface DiskServiceOptions {
  path: string;
  /** Listen address; every address when omitted. */
  host?: string;
  port: number;
  exportName: string;
  /**
   * The connections the desktop's kernel keeps (server.nbd.connections): a
   * new one beyond them replaces the desktop's oldest, which its kernel
   * gave up and reconnected (after a pulled cable).
   */
  connections: number;
  /** Called for every new connection: may this peer host use the disk now? */
  admit(peerHost: string): { ok: true } | { ok: false; message: string };
  /** Called when an admitted connection ends; `detached`: its client said NBD_CMD_DISC first. */
  disconnected(peerHost: string, how: { detached: boolean }): void;
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
  /** Per-boot link settings for the manifest; by default a WireGuard tunnel when config server.wireguard.enabled. */
  link?: (peer: { host: string; session: string }) => Promise<ManifestLink>;
  /** Where programs (ip, wg, mount...) run; tests script it. */
  runner?: CommandRunner;
  /** Scratch space for the payload found on the disk (a tmpfs in stiefelOS). */
  workDir?: string;
  /** Asks the laptop's console for a LUKS passphrase while the desktop is asked too; the first answer wins. */
  consolePassphrase?: PassphraseProvider;
  /**
   * The way back to the laptop's own OS when the desktop is done (the
   * stiefelOS server role only: elsewhere nothing is kexec'd).
   */
  wayBack?: { console: ConsoleIO; actions?: Partial<WayBackActions> };
  /** Sounds the battery warnings (the console's bell, the PC speaker); silent when omitted. */
  beeper?: Beeper;
  /** The status panel on the laptop's console, redrawn once a second. */
  panel?: ConsolePanel;
  /** Where `stiefelctl status` asks; /run/stiefelsystem/status.sock. */
  statusSocket?: string;
}

export interface BootServer {
  readonly goodbye: GoodbyeListener | undefined;
  readonly payload: PayloadServer;
  readonly discovery: DiscoveryResponder;
  readonly disk: DiskService | undefined;
  readonly lock: ClientLock;
  readonly interfaces: InterfaceWatcher;
  readonly wireguard: WireGuardServer | undefined;
  /** Resolves when the payload digests are computed (or rejects why not). */
  readonly payloadReady: Promise<void>;
  /** Resolves when PXE serves, or said why not. */
  readonly pxeReady: Promise<void>;
  /** The PXE part, once it serves. */
  pxe(): PxeRole | undefined;
  close(): Promise<void>;
}

/** What the way back does, for real (tests replace parts). */
function wayBackActions(
  given: Partial<WayBackActions> | undefined,
  deps: { diskPath: string; disk: () => DiskService | undefined; source: BootPayloadSource; runner: CommandRunner; log: Logger },
): WayBackActions {
  const kexec = kexecTools({ handOff: 'direct' });
  const power = async (verb: 'reboot' | 'poweroff'): Promise<void> => {
    await deps.runner.run('sync', []);
    await runChecked(deps.runner, 'E_POWER', 'busybox', [verb, '-f']);
  };
  return {
    stopDisk: async () => {
      await deps.disk()?.close();
    },
    health: async () => checkDiskHealth((offset, length) => readRange(deps.diskPath, offset, length), await deviceSize(deps.diskPath)),
    ownOs: async () => {
      const p = await deps.source.resolve({ log: deps.log, signal: new AbortController().signal, passphrase: { attempts: 0, ask: () => Promise.reject(new Error('no passphrase on the way back')) } });
      return { kernel: p.local.kernel, initrd: p.local.initrd, cmdline: p.cmdline };
    },
    kexec: async (image) => {
      await kexec.load(image, { log: deps.log });
      await kexec.exec({ log: deps.log });
    },
    reboot: () => power('reboot'),
    poweroff: () => power('poweroff'),
    ...given,
  };
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
  // Every part of the server (discovery, payload, disk, PXE and its links,
  // the watchers) ends with this signal: more than Node's default 10.
  setMaxListeners(64, signal);
  const cfg = o.config;
  const keys = deriveSubKeys(o.secret);
  const runner = o.runner ?? systemRunner;
  const lock = new ClientLock({ handoffMs: cfg.server.handoffTimeoutS * 1000, idleMs: 30_000 });

  const closers: Array<() => Promise<void>> = [];
  const close = async (): Promise<void> => {
    while (closers.length) await closers.pop()!().catch(() => undefined);
  };
  try {
    const diskPath = cfg.server.disk === undefined ? undefined : await resolveDisk(cfg.server.disk, { log, signal });
    // Where the payload comes from: the files named in the config, else the
    // default boot entry on the disk.
    let source = o.source;
    let payloadReady: Promise<void> = Promise.resolve();
    if (!source) {
      const boot = cfg.server.boot;
      if (boot) {
        const files = new FilesPayloadSource(boot);
        source = files;
        const t0 = Date.now();
        payloadReady = files.prepare(signal).then(() => log.info(`boot payload ready: ${boot.kernel}, ${boot.initrd} (digests in ${((Date.now() - t0) / 1000).toFixed(1)} s)`));
      } else if (diskPath) {
        const found = new BootEntriesPayloadSource({
          device: diskPath,
          workDir: o.workDir ?? '/run/stiefelsystem',
          family: cfg.server.family,
          cmdline: cfg.server.cmdline,
          runner,
        });
        source = found;
        closers.push(() => found.close());
        // Found at start-up when it can be; an encrypted /boot waits for the
        // first desktop, which is asked for the passphrase.
        payloadReady = found.prepare({ log, signal }).then(() => undefined);
      } else {
        throw new StiefelError(
          'E_CONFIG',
          `config ${cfg.file ?? '(defaults)'}: neither server.disk nor server.boot is set: name the laptop's disk (its boot entries are found there) or the kernel, initrd and cmdline (see 'stiefelctl init')`,
        );
      }
    }

    // Reported as soon as it fails; a desktop asking later is told why too.
    payloadReady.catch((err: Error) => log.warn(`the boot payload is not ready: ${err.message}`));

    // Our own tunnel interface is not a port to discover on.
    const upListeners: Array<(name: string) => void> = [];
    const interfaces = watchInterfaces(
      { interfaces: cfg.network.interfaces, exclude: [...cfg.network.exclude, WG_INTERFACE], intervalMs: cfg.network.watchIntervalMs },
      {
        log: log.child('netif'),
        signal,
        net: o.net,
        onUp: (name) => {
          log.debug(`interface ${name} up`);
          for (const listener of upListeners) listener(name);
        },
      },
    );
    closers.push(async () => interfaces.stop());
    await interfaces.ready;

    // The disk link: a WireGuard tunnel with keys made for this boot, and the
    // disk served on its address alone.
    let wireguard: WireGuardServer | undefined;
    let link = o.link;
    if (!link && cfg.server.wireguard.enabled && diskPath) {
      const wg = await startWireGuardServer({ port: cfg.server.wireguard.port, mtu: cfg.link.mtu }, { runner, log: log.child('wireguard') });
      wireguard = wg;
      closers.push(() => wg.close());
      link = async () => ({ wireguard: await wg.addPeer() });
    }

    // What `stiefelctl status` shows, started below; the goodbye listener answers with it too.
    let status: StatusService | undefined;
    // The way back: the desktop's goodbye (on the disk's address), or its vanishing.
    let goodbye: GoodbyeListener | undefined;
    let back: WayBack | undefined;
    let saidGoodbye = false;
    if (diskPath && o.startDisk && o.wayBack) {
      back = createWayBack({
        whenDone: cfg.server.whenDone,
        delayS: cfg.server.returnDelayS,
        console: o.wayBack.console,
        actions: wayBackActions(o.wayBack.actions, { diskPath, disk: () => disk, source: source!, runner, log }),
        log: log.child('way-back'),
        signal,
      });
      const wb = back;
      const g = await startGoodbyeListener(
        {
          port: cfg.server.goodbyePort,
          host: wireguard?.address,
          onGoodbye: ({ host, verb }) => {
            saidGoodbye = true;
            wb.goodbye(host, verb).catch((err: Error) => log.warn(`the way back failed: ${err.message}`));
          },
          // For the laptop OS on the desktop (its battery warnings); the pairing code is for this console only.
          status: () => {
            const s = status?.latest();
            return s && { ...s, pairingCode: null };
          },
        },
        { log: log.child('goodbye'), signal },
      );
      goodbye = g;
      closers.push(() => g.close());
      const inner = link;
      link = async (peer) => ({ ...(inner ? await inner(peer) : {}), goodbye: g.issue(peer.host) });
    }

    // A laptop serving on battery says so, and beeps.
    const battery = watchBattery(
      { ...cfg.server.battery, beeper: o.beeper ?? { beep: async () => undefined } },
      { log: log.child('battery'), signal },
    );
    closers.push(async () => battery.stop());

    // The desktop holding the disk, while it does: watched for silence, and
    // what it moves shown on the console every minute.
    let diskHolder: string | undefined;
    let holderSince = 0;
    if (wireguard && diskPath && o.startDisk) {
      const wg = wireguard;
      const silence = watchSilence(
        {
          received: () => (diskHolder === undefined ? Promise.resolve(undefined) : wg.received()),
          intervalMs: SILENCE_POLL_MS,
          silentAfterMs: SILENT_AFTER_MS,
          onEvent: (event) => {
            if (diskHolder === undefined) return;
            if (event.kind === 'silent') {
              log.warn(
                `the desktop at ${diskHolder} has not been heard from for ${Math.round(event.forMs / 1000)} s: the cable is out or the desktop is off; its disk stays served for it to come back`,
              );
            } else {
              log.info(`the desktop at ${diskHolder} is heard again, after ${Math.round(event.afterMs / 1000)} s`);
            }
          },
        },
        { signal },
      );
      closers.push(async () => silence.stop());
    }

    let disk: DiskService | undefined;
    if (diskPath && o.startDisk) {
      disk = await o.startDisk(
        {
          path: diskPath,
          host: wireguard?.address,
          port: cfg.server.nbd.port,
          exportName: cfg.server.nbd.export,
          connections: cfg.server.nbd.connections,
          admit: (peer) => {
            const d = lock.admitDisk(peer);
            if (d.ok) {
              log.info(`the desktop at ${peer} connected to the disk`);
              if (diskHolder !== peer) holderSince = Date.now();
              diskHolder = peer;
              back?.returned();
              return { ok: true };
            }
            log.warn(`refused a disk connection from ${peer}: busy with ${d.owner.host}`);
            return { ok: false, message: busyMessage(d.owner) };
          },
          disconnected: (peer, how) => {
            // Without a goodbye or NBD_CMD_DISC the disk stays held for this desktop (see ClientLock).
            if (!lock.diskClosed(peer, saidGoodbye || how.detached)) return;
            diskHolder = undefined;
            log.info(`the desktop at ${peer} disconnected from the disk${how.detached ? ' (it detached it)' : ''}`);
            if (!saidGoodbye) back?.vanished(peer, how.detached).catch((err: Error) => log.warn(`the way back failed: ${err.message}`));
          },
        },
        { log: log.child('nbd'), signal },
      );
      const d = disk;
      closers.push(() => d.close());
      const status = watchDiskStatus(
        { traffic: () => d.traffic(), holder: () => (diskHolder === undefined ? undefined : { peer: diskHolder, since: holderSince }), print: (line) => log.info(line) },
        { signal },
      );
      closers.push(async () => status.stop());
    } else if (diskPath) {
      log.warn(`server.disk ${diskPath} is not served: no disk server given`);
    }

    // A cable MTU other than Ethernet's: the desktop sets it on its end too.
    if (cfg.link.mtu !== 1500) {
      const inner = link;
      const mtu = cfg.link.mtu;
      link = async (peer) => ({ ...(inner ? await inner(peer) : {}), mtu });
    }

    // Desktops that PXE-booted hold no secret: they pair with the console's code.
    let pxe: PxeRole | undefined;
    const payload = await startPayloadServer(
      {
        psk: keys.payloadPsk,
        manifestKey: keys.manifest,
        pairedKeys: (identity, host) => pxe?.desk.keysFor(identity, host),
        port: cfg.payload.port,
        serverName: o.serverName,
        source,
        nbd: { port: disk?.port ?? cfg.server.nbd.port, export: cfg.server.nbd.export, blockSize: disk?.blockSize ?? 512, ...(cfg.server.nbd.connections > 1 ? { connections: cfg.server.nbd.connections } : {}) },
        attach: cfg.server.attach,
        cmdlineAppend: cfg.server.cmdlineAppend,
        lock,
        link,
        ...(o.consolePassphrase ? { consolePassphrase: o.consolePassphrase } : {}),
      },
      { log: log.child('payload'), signal },
    );
    closers.push(() => payload.close());

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

    let pxeReady: Promise<void> = Promise.resolve();
    if (cfg.server.pxe.enabled) {
      const pxeLog = log.child('pxe');
      const p = cfg.server.pxe;
      // Checking the image reads it whole: the rest of the server does not wait.
      pxeReady = findPxeImage(p.image, pxeLog)
        .then(async (image) => {
          if (!image || signal.aborted) return;
          const role = await startPxeRole(
            {
              image,
              pxe: p,
              lock,
              serverName: o.serverName,
              payloadPort: payload.port,
              links: { up: interfaces.up, onUp: (listener) => upListeners.push(listener) },
              // Not under the work directory (root only): dnsmasq runs as nobody and must reach its TFTP root.
              runDir: PXE_RUN_DIR,
              runner,
            },
            { log: pxeLog, signal },
          );
          pxe = role;
          closers.push(() => role.close());
        })
        .catch((err: Error) => pxeLog.warn(`PXE is off: ${err.message}`));
    }

    // What `stiefelctl status` shows, sampled once a second.
    const started = Date.now();
    const diskNow = disk;
    status = await startStatusService(
      {
        sample: statusSampler({
          server: o.serverName,
          startedAt: started,
          ...(diskPath && diskNow ? { disk: { path: diskPath, export: cfg.server.nbd.export }, counters: () => diskNow.traffic() } : {}),
          holder: () => (diskHolder === undefined ? undefined : { peer: diskHolder, since: holderSince }),
          links: () => [...interfaces.up],
          powerSupply: cfg.server.battery.powerSupply,
          pairingCode: () => pxe?.desk.code || undefined,
        }),
        socketPath: o.statusSocket ?? STATUS_SOCKET,
      },
      { log: log.child('status'), signal },
    ).catch((err: Error) => {
      log.warn(`'stiefelctl status' will not answer: ${err.message}`);
      return undefined;
    });
    if (status) closers.push(() => status.close());
    // The panel on the laptop's console: the same sample, redrawn once a second.
    if (o.panel && status) {
      const panel = o.panel;
      const sampled = status;
      const redraw = setInterval(() => {
        const latest = sampled.latest();
        if (latest) panel.draw(formatStatus(latest, Date.now(), panel.geometry.cols - 1));
      }, 1000);
      redraw.unref();
      closers.push(async () => {
        clearInterval(redraw);
        panel.close();
      });
    }

    log.info(
      `serving '${o.serverName}': discovery on UDP ${cfg.discovery.port}, payload on HTTPS ${payload.port}${disk ? `, disk ${diskPath} on NBD ${disk.port}${wireguard ? ` at ${wireguard.address} (WireGuard only)` : ''}` : ''}; interfaces: ${[...interfaces.up].sort().join(', ') || '(none yet)'}`,
    );
    signal.addEventListener('abort', () => void close(), { once: true });
    return { goodbye, payload, discovery, disk, lock, interfaces, wireguard, payloadReady, pxeReady, pxe: () => pxe, close };
  } catch (err) {
    await close();
    throw err;
  }
}
