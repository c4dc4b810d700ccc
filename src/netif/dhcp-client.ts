// An IPv4 address for the desktop (to download an ISO): busybox udhcpc on
// every link at once, the first lease wins and is applied with ip(8): the
// address, the default route, and the name servers in /etc/resolv.conf.
// udhcpc runs once (-q: quit after the lease) and its script only prints
// what it got; applying it is ours, so it is checked and logged.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { posix } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { runChecked, type CommandRunner } from '../disk/runner';

const SCRIPT = '#!/bin/sh\n[ "$1" = bound ] || [ "$1" = renew ] || exit 0\necho "stiefel-lease ip=$ip mask=$mask router=$router dns=$dns"\n';

export interface Lease {
  interface: string;
  address: string;
  prefixLength: number;
  routers: string[];
  dns: string[];
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** What the script printed, checked: undefined when no lease is in it. */
export function parseLease(stdout: string, iface: string): Lease | undefined {
  const m = /^stiefel-lease ip=(\S*) mask=(\d*) router=([^\n]*?) dns=([^\n]*)$/m.exec(stdout);
  if (!m || !IPV4.test(m[1]!) || m[2] === '' || Number(m[2]) < 1 || Number(m[2]) > 32) return undefined;
  const list = (text: string): string[] => text.split(/\s+/).filter((a) => IPV4.test(a));
  return { interface: iface, address: m[1]!, prefixLength: Number(m[2]), routers: list(m[3]!), dns: list(m[4]!) };
}

export interface DhcpOptions {
  interfaces: readonly string[];
  /** Seconds udhcpc tries on each link. */
  tries?: number;
  runner: CommandRunner;
  busybox?: string;
  ip?: string;
  resolvConf?: string;
  runDir?: string;
}

/** Gets a lease on one of the links and applies it; the others give up. */
export async function dhcpOnAnyLink(o: DhcpOptions, ctx: { log: Logger }): Promise<Lease> {
  if (o.interfaces.length === 0) throw new StiefelError('E_NETIF', 'no network interface is up: is a cable in?');
  const dir = o.runDir ?? '/run';
  const script = posix.join(dir, `stiefel-udhcpc-${randomBytes(4).toString('hex')}.sh`);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(script, SCRIPT, { mode: 0o755 });
  try {
    const busybox = o.busybox ?? 'busybox';
    const tries = String(o.tries ?? 8);
    const leases = await Promise.all(
      o.interfaces.map(async (name) => {
        const r = await o.runner.run(busybox, ['udhcpc', '-i', name, '-f', '-q', '-n', '-t', tries, '-T', '1', '-A', '0', '-s', script]);
        return parseLease(r.stdout, name);
      }),
    );
    const lease = leases.find((l): l is Lease => l !== undefined);
    if (!lease) throw new StiefelError('E_DHCP', `no DHCP server answered on ${o.interfaces.join(', ')} within ${tries} s: is the cable in a network with a DHCP server?`);
    const ip = (args: string[]): Promise<string> => runChecked(o.runner, 'E_DHCP', o.ip ?? 'ip', args);
    await ip(['addr', 'add', `${lease.address}/${lease.prefixLength}`, 'dev', lease.interface]);
    if (lease.routers[0]) await ip(['route', 'replace', 'default', 'via', lease.routers[0], 'dev', lease.interface]);
    if (lease.dns.length) await fs.writeFile(o.resolvConf ?? '/etc/resolv.conf', lease.dns.map((d) => `nameserver ${d}\n`).join(''));
    ctx.log.info(
      `DHCP on ${lease.interface}: ${lease.address}/${lease.prefixLength}${lease.routers[0] ? `, router ${lease.routers[0]}` : ''}${lease.dns.length ? `, DNS ${lease.dns.join(' ')}` : ', no DNS'}`,
    );
    return lease;
  } finally {
    await fs.rm(script, { force: true });
  }
}
