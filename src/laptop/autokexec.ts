// The laptop's trigger (`stiefelctl autokexec`, the stiefel-autokexec
// service in the laptop's own OS): when a desktop asks for the laptop with
// an authentic discovery request, or the cable's interface gets carrier,
// load stiefelOS, tell the people logged in, count down, and reboot into it
// through systemd's clean shutdown. A person can cancel the countdown with
// `stiefelctl autokexec --cancel` (through a root-only socket).
//
// The requests are the desktop's ordinary FIND_SERVER datagrams, checked as
// stiefelOS checks them (HMAC, timestamp window, nonce memory). The newest
// timestamp accepted is kept on disk, so that a request captured before a
// restart of the service (or of the laptop) never triggers after it. No
// reply is sent: this OS is not the server; stiefelOS answers once it runs.
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import type { Config } from '../config/schema';
import { deriveSubKeys } from '../crypto/keys';
import { decodeDiscovery, DISCOVERY_MAX_SIZE, type DropReason } from '../discovery/datagram';
import { ReplayGuard } from '../discovery/replay-guard';
import { StiefelError } from '../errors';
import type { Kexec } from '../kexec/kexec';
import type { Logger } from '../log';
import { makeDirectory } from '../make-dir';
import { watchInterfaces, type NetworkControl } from '../netif/interfaces';
import { WarningLimiter } from '../warning-limiter';
import { serverCmdline } from '../cmdline/stiefelos-cmdline';
import { AutokexecGate } from './autokexec-gate';
import type { Notifier } from './notify';

export const AUTOKEXEC_SOCKET = '/run/stiefelsystem/autokexec.sock';
export const AUTOKEXEC_STATE = '/var/lib/stiefelsystem/autokexec.json';
/** After a failed attempt, the next trigger is taken this much later. */
const RETRY_MS = 60_000;
const CARRIER_POLL_MS = 500;

export interface AutokexecOptions {
  config: Config;
  secret: Buffer;
  kexec: Kexec;
  notify: Notifier;
  net: NetworkControl;
  /** The running kernel's command line (/proc/cmdline). */
  runningCmdline: string;
  stateFile?: string;
  controlSocket?: string;
  sysClassNet?: string;
  now?: () => number;
}

export interface Autokexec {
  /** Resolves once listening. */
  readonly ready: Promise<void>;
  /** Resolves when the reboot was handed to systemd (then the service is stopped by it). */
  readonly fired: Promise<void>;
  close(): Promise<void>;
}

interface SavedState {
  /** The newest request timestamp accepted so far, ms. */
  newestRequestMs: number;
}

async function loadFloor(path: string, log: Logger): Promise<number | undefined> {
  try {
    const s = JSON.parse(await fs.readFile(path, 'utf8')) as Partial<SavedState>;
    return typeof s.newestRequestMs === 'number' && Number.isFinite(s.newestRequestMs) ? s.newestRequestMs : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn(`cannot read ${path} (${(err as Error).message}); requests older than now are still refused by their timestamps`);
    return undefined;
  }
}

async function saveFloor(path: string, newestRequestMs: number): Promise<void> {
  await makeDirectory(dirname(path), { what: "autokexec's state directory", mode: 0o700 });
  const tmp = `${path}.tmp`;
  const data: SavedState = { newestRequestMs };
  const h = await fs.open(tmp, 'w', 0o600);
  try {
    await h.writeFile(`${JSON.stringify(data)}\n`);
    await h.sync();
  } finally {
    await h.close();
  }
  await fs.rename(tmp, path);
}

function bindUdp(type: 'udp4' | 'udp6', port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type, ipv6Only: type === 'udp6' });
    socket.once('error', reject);
    socket.bind({ port, address: type === 'udp6' ? '::' : '0.0.0.0', exclusive: true }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

/** Reason words for the journal, for drops a person can act on. */
const DROP_WORDS: Partial<Record<DropReason, string>> = {
  'bad-tag': 'a forged request, or a desktop with another secret',
  stale: 'an old request replayed, or a desktop whose clock is off (discovery.max_clock_skew_s)',
  replay: 'a request replayed',
  version: 'a desktop speaking another discovery version',
};

export function startAutokexec(options: AutokexecOptions, ctx: { log: Logger; signal: AbortSignal }): Autokexec {
  const { config } = options;
  const { log } = ctx;
  const now = options.now ?? Date.now;
  const stateFile = options.stateFile ?? AUTOKEXEC_STATE;
  const socketPath = options.controlSocket ?? AUTOKEXEC_SOCKET;
  const key = deriveSubKeys(options.secret).discovery;
  const gate = new AutokexecGate({ holdoffMs: config.autokexec.holdoffS * 1000, retryMs: RETRY_MS });
  const warnings = new WarningLimiter({ now });
  const trigger = config.autokexec.trigger;
  const image = { kernel: join(config.autokexec.image, 'vmlinuz'), initrd: join(config.autokexec.image, 'initrd.img'), cmdline: serverCmdline(options.runningCmdline, config.autokexec.cmdlineAppend) };
  const sockets: Socket[] = [];
  let control: Server | undefined;
  let guard: ReplayGuard | undefined;
  let cancelCountdown: (() => void) | undefined;
  let closed = false;
  let resolveFired!: () => void;
  const fired = new Promise<void>((r) => (resolveFired = r));

  // One save at a time: the timer's and the reboot's share the file's temporary name.
  let saving = Promise.resolve();
  const persist = (): Promise<void> => {
    saving = saving.then(async () => {
      if (guard && Number.isFinite(guard.newestMs)) await saveFloor(stateFile, guard.newestMs).catch((err: Error) => log.warn(`cannot keep the newest request time in ${stateFile}: ${err.message}`));
    });
    return saving;
  };
  let saveTimer: NodeJS.Timeout | undefined;
  const persistSoon = (): void => {
    saveTimer ??= setTimeout(() => {
      saveTimer = undefined;
      void persist();
    }, 1000);
  };

  /** The countdown and the reboot, for one trigger that passed the gate. */
  const run = async (why: string): Promise<void> => {
    log.info(`triggered: ${why}; loading stiefelOS from ${config.autokexec.image}`);
    try {
      await fs.access(image.initrd);
    } catch {
      log.warn(`stiefelOS is not there (${image.initrd}): run 'stiefelctl setup-server-os' to build it; not rebooting`);
      gate.failed(now());
      return;
    }
    try {
      await options.kexec.load(image, { log, signal: ctx.signal });
    } catch (err) {
      log.warn(`cannot load stiefelOS: ${(err as Error).message}; not rebooting (the next trigger is taken in ${RETRY_MS / 1000} s)`);
      gate.failed(now());
      return;
    }
    const delay = config.autokexec.delayS;
    const ask = "run 'stiefelctl autokexec --cancel' to stay";
    await options.notify.tell(`this laptop reboots into stiefelOS in ${delay} s to serve its disk`, `${why}. All programs will be closed. ${ask}.`, { urgent: true });
    const cancelled = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), delay * 1000);
      cancelCountdown = () => {
        clearTimeout(timer);
        resolve(true);
      };
      ctx.signal.addEventListener('abort', () => cancelCountdown?.(), { once: true });
    });
    cancelCountdown = undefined;
    if (cancelled || ctx.signal.aborted) {
      await options.kexec.unload({ log }).catch((err: Error) => log.warn(`cannot unload stiefelOS: ${err.message}`));
      if (!ctx.signal.aborted) {
        log.info(`cancelled; triggers are ignored for ${config.autokexec.holdoffS} s`);
        await options.notify.tell('the reboot into stiefelOS was cancelled', `This laptop stays in its own OS; requests are ignored for ${Math.round(config.autokexec.holdoffS / 60)} minutes.`);
      }
      return;
    }
    gate.fire();
    await persist();
    log.info('rebooting into stiefelOS (systemctl kexec: a clean shutdown first)');
    await options.notify.tell('rebooting into stiefelOS now', 'The desktop will boot this laptop\u2019s OS from its disk.', { urgent: true });
    try {
      await options.kexec.exec({ log });
      resolveFired();
    } catch (err) {
      log.warn(`the reboot failed: ${(err as Error).message}`);
      gate.failed(now());
    }
  };

  const onTrigger = (why: string): void => {
    const verdict = gate.trigger(now());
    if (verdict.start) {
      void run(why);
      return;
    }
    const until = verdict.untilMs ? ` until ${new Date(verdict.untilMs).toISOString()}` : '';
    for (const line of warnings.lines(`ignored ${verdict.why}`, `ignored a trigger (${why}): ${verdict.why}${until}`)) log.info(line);
  };

  const onDatagram = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (!guard || msg.length > DISCOVERY_MAX_SIZE) return;
    const r = decodeDiscovery(msg, key);
    let reason: DropReason | undefined;
    let clientName = '';
    if (!r.ok) reason = r.reason;
    else if (r.message.type !== 'find-server') reason = 'unexpected';
    else {
      clientName = r.message.clientName;
      const fresh = guard.check(r.message.timestampMs, r.message.nonce, now());
      if (fresh !== 'fresh') reason = fresh;
    }
    if (reason) {
      const words = DROP_WORDS[reason];
      if (words) for (const line of warnings.lines(`${reason} ${rinfo.address}`, `refused a request from ${rinfo.address}: ${reason} (${words})`)) log.warn(line);
      return;
    }
    persistSoon();
    onTrigger(`the desktop ${clientName || '(unnamed)'} at ${rinfo.address} asked for this laptop`);
  };

  /** Carrier on the interface with link_mac: a transition from none to some, after start. */
  const watchCarrier = (): NodeJS.Timeout => {
    const sys = options.sysClassNet ?? '/sys/class/net';
    const mac = config.autokexec.linkMac?.toLowerCase();
    let last: boolean | undefined;
    const poll = async (): Promise<void> => {
      let carrier = false;
      let name: string | undefined;
      for (const n of await fs.readdir(sys).catch(() => [] as string[])) {
        if ((await options.net.mac(n)) !== mac) continue;
        name = n;
        carrier = (await fs.readFile(join(sys, n, 'carrier'), 'utf8').catch(() => '0')).trim() === '1';
      }
      if (last === false && carrier) onTrigger(`the cable of ${name} (${mac}) got carrier`);
      last = carrier;
    };
    const timer = setInterval(() => void poll(), CARRIER_POLL_MS);
    void poll();
    return timer;
  };

  const serveControl = async (): Promise<Server> => {
    await makeDirectory(dirname(socketPath), { what: "autokexec's socket directory", mode: 0o755 });
    await fs.rm(socketPath, { force: true });
    const server = createServer((conn) => {
      conn.setEncoding('utf8');
      let line = '';
      conn.on('data', (d: string) => {
        line += d;
        if (!line.includes('\n')) return;
        const cmd = line.split('\n')[0]!.trim();
        if (cmd === 'cancel') {
          const had = gate.cancel(now());
          if (had) cancelCountdown?.();
          conn.end(had ? `cancelled: this laptop stays in its own OS; requests are ignored for ${config.autokexec.holdoffS} s\n` : 'nothing to cancel: no reboot is counting down\n');
        } else if (cmd === 'status') {
          conn.end(`${gate.state}\n`);
        } else conn.end(`unknown request '${cmd.slice(0, 40)}'\n`);
      });
      conn.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    await fs.chmod(socketPath, 0o600);
    return server;
  };

  let carrierTimer: NodeJS.Timeout | undefined;
  const interfaces = watchInterfaces({ ...config.network, intervalMs: config.network.watchIntervalMs }, { log: log.child('netif'), signal: ctx.signal, net: options.net });

  const ready = (async () => {
    guard = new ReplayGuard({ maxSkewMs: config.discovery.maxClockSkewS * 1000, floorMs: await loadFloor(stateFile, log) });
    control = await serveControl();
    if (trigger !== 'link') {
      for (const type of ['udp6', 'udp4'] as const) {
        try {
          const s = await bindUdp(type, config.discovery.port);
          s.on('message', onDatagram);
          s.on('error', (err) => log.warn(`discovery socket error: ${err.message}`));
          sockets.push(s);
        } catch (err) {
          throw new StiefelError('E_AUTOKEXEC_BIND', `cannot listen for desktops on UDP port ${config.discovery.port} (${type === 'udp6' ? 'IPv6' : 'IPv4'}): ${(err as Error).message}`, { cause: err });
        }
      }
    }
    if (trigger !== 'discovery') {
      if (!config.autokexec.linkMac) throw new StiefelError('E_CONFIG', `autokexec.trigger is ${trigger}, but autokexec.link_mac names no interface: set it to the MAC of the cable's interface`);
      carrierTimer = watchCarrier();
    }
    await interfaces.ready;
    const what = trigger === 'link' ? `carrier on ${config.autokexec.linkMac}` : `desktops on UDP port ${config.discovery.port}${trigger === 'both' ? ` and carrier on ${config.autokexec.linkMac}` : ''}`;
    log.info(`waiting for ${what}; stiefelOS is ${config.autokexec.image}`);
  })();

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    interfaces.stop();
    if (carrierTimer) clearInterval(carrierTimer);
    if (saveTimer) clearTimeout(saveTimer);
    cancelCountdown?.();
    await persist();
    await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (control) await new Promise<void>((r) => control!.close(() => r()));
    await fs.rm(socketPath, { force: true }).catch(() => undefined);
  };
  ctx.signal.addEventListener('abort', () => void close(), { once: true });
  return { ready, fired, close };
}

/** `stiefelctl autokexec --cancel`: asks the running service to cancel its countdown; its answer. */
export async function requestCancel(socketPath = AUTOKEXEC_SOCKET): Promise<string> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const c = connect(socketPath);
    let answer = '';
    c.setEncoding('utf8');
    c.on('data', (d: string) => (answer += d));
    c.on('end', () => resolve(answer.trim()));
    c.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? "the autokexec service is not running (systemctl status stiefel-autokexec)" : err.code === 'EACCES' ? 'permission denied: run it as root' : err.message;
      reject(new StiefelError('E_AUTOKEXEC_CANCEL', `cannot reach the autokexec service at ${socketPath}: ${why}`, { cause: err }));
    });
    c.write('cancel\n');
  });
}
