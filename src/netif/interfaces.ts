// Network interfaces: which ones to use, bringing them up, watching for new
// ones (a USB adapter plugged in after start).
//
// stiefelOS has no network manager: whoever runs discovery brings every
// interface up itself. Only IPv6 link-local addresses are needed, which the
// kernel assigns on its own once the link is up; duplicate address detection
// is switched off first so the address is usable at once instead of after a
// second or more (on a point-to-point cable between two machines a link-local
// collision would need two equal MACs).
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';

export interface InterfaceSelection {
  /** `all`, or the only names to use. */
  interfaces: 'all' | readonly string[];
  /** Names, or prefixes ending in '*', never touched. */
  exclude: readonly string[];
}

/** Whether an interface is ours to use. `lo` never is. */
export function isSelected(name: string, selection: InterfaceSelection): boolean {
  if (name === 'lo') return false;
  for (const pattern of selection.exclude) {
    if (pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern) return false;
  }
  return selection.interfaces === 'all' || selection.interfaces.includes(name);
}

export interface Ipv4Address {
  address: string;
  netmask: string;
  /** Directed broadcast address of the subnet. */
  broadcast: string;
}

export function ipv4Broadcast(address: string, netmask: string): string {
  const a = address.split('.').map(Number);
  const m = netmask.split('.').map(Number);
  return a.map((x, i) => (x | (~m[i]! & 0xff)) & 0xff).join('.');
}

/** What discovery needs to know about the machine's interfaces. */
export interface NetworkControl {
  /** Names of all interfaces present now (lo included). */
  list(): Promise<string[]>;
  /** Sets the link up (no-op when it is); resolves when the kernel accepted it. */
  bringUp(name: string): Promise<void>;
  /** The interface's MAC address, lower case, or undefined. */
  mac(name: string): Promise<string | undefined>;
  /** IPv4 addresses, for broadcast discovery. */
  ipv4(name: string): Ipv4Address[];
}

export interface SystemNetworkOptions {
  /** Where interfaces are listed; /sys/class/net. */
  sysClassNet?: string;
  /** Where IPv6 per-interface settings live; /proc/sys/net/ipv6/conf. */
  ipv6Conf?: string;
  /** The iproute2 binary. */
  ip?: string;
  /** The MTU every interface brought up gets (link.mtu), where its driver takes it. */
  mtu?: number;
  /** Told when a driver refuses that MTU (the interface comes up with its own). */
  warn?: (message: string) => void;
}

export function systemNetworkControl(options: SystemNetworkOptions = {}): NetworkControl {
  const sys = options.sysClassNet ?? '/sys/class/net';
  const conf = options.ipv6Conf ?? '/proc/sys/net/ipv6/conf';
  const ip = options.ip ?? 'ip';
  const run = (args: string[]): Promise<string | undefined> =>
    new Promise((resolve) => execFile(ip, args, { timeout: 10_000 }, (err, _stdout, stderr) => resolve(err ? (stderr || err.message).trim().split('\n')[0] : undefined)));
  const setMtu = async (name: string, mtu: number): Promise<void> => {
    const now = Number((await fs.readFile(join(sys, name, 'mtu'), 'utf8').catch(() => '')).trim());
    if (!now || now === mtu) return;
    const refused = await run(['link', 'set', 'dev', name, 'mtu', String(mtu)]);
    if (refused) options.warn?.(`${name} does not take MTU ${mtu} (${refused}): it stays at ${now}, and TCP keeps to the smaller one`);
  };
  return {
    async list() {
      try {
        return (await fs.readdir(sys)).sort();
      } catch (err) {
        throw new StiefelError('E_NETIF', `cannot list network interfaces in ${sys}: ${(err as Error).message}`, { cause: err });
      }
    },
    async bringUp(name) {
      if (options.mtu !== undefined) await setMtu(name, options.mtu);
      // Already up (IFF_UP in the flags): nothing to do, and no process to start.
      const flags = await fs.readFile(join(sys, name, 'flags'), 'utf8').catch(() => '');
      if (flags && (Number.parseInt(flags.trim(), 16) & 0x1) !== 0) return;
      // Best effort: a kernel without IPv6 has no such file.
      await fs.writeFile(join(conf, name, 'accept_dad'), '0').catch(() => undefined);
      await new Promise<void>((resolve, reject) => {
        execFile(ip, ['link', 'set', 'dev', name, 'up'], { timeout: 10_000 }, (err, _stdout, stderr) => {
          if (!err) return resolve();
          const why = (stderr || err.message).trim().split('\n')[0];
          reject(new StiefelError('E_NETIF', `cannot bring up network interface ${name}: ${why}`, { cause: err }));
        });
      });
    },
    async mac(name) {
      try {
        const text = (await fs.readFile(join(sys, name, 'address'), 'utf8')).trim().toLowerCase();
        return /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(text) ? text : undefined;
      } catch {
        return undefined;
      }
    },
    ipv4(name) {
      const list = networkInterfaces()[name] ?? [];
      return list
        .filter((a) => a.family === 'IPv4' && !a.internal)
        .map((a) => ({ address: a.address, netmask: a.netmask, broadcast: ipv4Broadcast(a.address, a.netmask) }));
    },
  };
}

export interface InterfaceWatcherOptions extends InterfaceSelection {
  /** How often the list is read again, ms. */
  intervalMs: number;
}

export interface InterfaceWatcher {
  /** Interfaces selected and brought up so far. */
  readonly up: ReadonlySet<string>;
  /** Resolves after the first scan (every present interface tried once). */
  readonly ready: Promise<void>;
  /** Scans again now (also runs every intervalMs). */
  scan(): Promise<void>;
  stop(): void;
}

/**
 * Brings every selected interface up, now and whenever a new one appears,
 * until the signal aborts. Failures are logged and retried on the next scan.
 */
export function watchInterfaces(
  options: InterfaceWatcherOptions,
  ctx: { log: Logger; signal?: AbortSignal; net: NetworkControl; onUp?: (name: string) => void },
): InterfaceWatcher {
  const up = new Set<string>();
  const failed = new Map<string, string>();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  const scanOnce = async (): Promise<void> => {
    const names = await ctx.net.list().catch((err: Error) => {
      ctx.log.warn(err.message);
      return [] as string[];
    });
    const present = new Set(names);
    for (const name of up) if (!present.has(name)) {
      up.delete(name);
      ctx.log.debug(`interface ${name} is gone`);
    }
    await Promise.all(
      names
        .filter((n) => isSelected(n, options) && !up.has(n))
        .map(async (name) => {
          try {
            await ctx.net.bringUp(name);
            up.add(name);
            failed.delete(name);
            ctx.log.debug(`interface ${name} is up`);
            ctx.onUp?.(name);
          } catch (err) {
            const msg = (err as Error).message;
            // Say it once, not every interval.
            if (failed.get(name) !== msg) ctx.log.warn(msg);
            failed.set(name, msg);
          }
        }),
    );
  };
  const scan = (): Promise<void> => {
    running ??= scanOnce().finally(() => (running = undefined));
    return running;
  };
  const stop = (): void => {
    stopped = true;
    if (timer) clearInterval(timer);
  };
  const ready = scan();
  if (!stopped) {
    timer = setInterval(() => void scan(), options.intervalMs);
    timer.unref?.();
  }
  ctx.signal?.addEventListener('abort', stop, { once: true });
  return { up, ready, scan, stop };
}
