// The kernel command line handed to the laptop OS when the desktop kexecs it:
// the laptop OS's own command line, plus what its initramfs needs to find its
// disk over the cable. Pure.
//
// Always added, read by stiefelsystem's own attach script in the laptop OS's
// initramfs (assets/server-os/stiefel-attach.sh):
//   stiefel.mac=MAC            the desktop NIC that reaches the laptop
//   stiefel.ifname=NAME        the name to give that NIC (stiefellink)
//   stiefel.server=ADDR        the laptop's link-local address on that link (no zone)
//   stiefel.nbd_host=ADDR      where the NBD server listens (the tunnel address with WireGuard)
//   stiefel.nbd_port=PORT      NBD port
//   stiefel.nbd_export=NAME    NBD export name
//   stiefel.conf=PATH          the file in the initramfs with this boot's keys (LINK_CONF_PATH)
//
// Plus, with `attach: family` (a laptop OS without stiefelsystem's hooks, no
// WireGuard), the family's own form, for initramfs NBD support that exists
// already; with stiefelsystem's hooks it would only race them for the disk:
//   initramfs-tools  nbdroot=[ADDR%IFNAME]:PORT/EXPORT nbddev=/dev/nbd0 ip=off
//                    (nbd-client's local-top script; ip=off: the link needs no IP config)
//   dracut           rd.neednet=1 ifname=IFNAME:MAC ip=IFNAME:link6
//                    netroot=nbd:HOST:EXPORT (port 10809) or netroot=nbd:HOST:PORT
//                    (dracut's nbd module splits at ':', so netroot is only
//                    given for an IPv4 NBD host; an IPv6 one is left to stiefel.*)
//   mkinitcpio       nbd_host=HOST nbd_name=EXPORT nbd_port=PORT (the nbd hook)
//
// Keys never go here (the command line is readable by every process as
// /proc/cmdline): they travel in the cpio appended to the initrd.
import { isIPv4, isIPv6 } from 'node:net';
import { StiefelError } from '../errors';
import type { AttachMode, InitramfsFamily } from '../config/schema';

/** x86 COMMAND_LINE_SIZE, including the terminating NUL. */
export const MAX_CMDLINE_BYTES = 2048;
export const DEFAULT_NBD_DEVICE = '/dev/nbd0';
export const LINK_CONF_PATH = '/etc/stiefelsystem/link.conf';

export interface LaptopCmdlineOptions {
  /** The laptop OS's own command line. */
  base: string;
  family: InitramfsFamily;
  /** `stiefelsystem`: only the stiefel.* parameters; `family`: also the family's own form. */
  attach: AttachMode;
  link: {
    /** MAC of the desktop NIC that reached the laptop. */
    mac: string;
    /** Name the initramfs gives that NIC. */
    interfaceName: string;
    /** The laptop's address on the link (link-local IPv6, no zone, or IPv4). */
    serverAddress: string;
  };
  nbd: {
    /** Where the NBD server is reached from the laptop OS; no zone. */
    host: string;
    port: number;
    export: string;
  };
}

export class CmdlineError extends StiefelError {
  constructor(message: string) {
    super('E_CMDLINE', message);
  }
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const EXPORT = /^[A-Za-z0-9_.:+-]{1,64}$/;

export function isIpv4(a: string): boolean {
  return isIPv4(a);
}

/** An IPv6 address without a zone (the zone is added where a tool needs it). */
export function isIpv6(a: string): boolean {
  return isIPv6(a) && !a.includes('%');
}

export function isLinkLocal6(a: string): boolean {
  return isIpv6(a) && /^fe[89ab][0-9a-f]:/i.test(a);
}

/** Splits a command line into words; double quotes group (as the kernel does). */
export function splitCmdline(cmdline: string): string[] {
  const words: string[] = [];
  let cur = '';
  let quoted = false;
  let has = false;
  for (const ch of cmdline) {
    if (ch === '"') {
      quoted = !quoted;
      cur += ch;
      has = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (has) words.push(cur);
      cur = '';
      has = false;
    } else {
      cur += ch;
      has = true;
    }
  }
  if (has) words.push(cur);
  return words;
}

/** The parameter name of a word (`root` for `root=/dev/x`, the word itself otherwise). */
export function paramName(word: string): string {
  const eq = word.indexOf('=');
  return eq < 0 ? word : word.slice(0, eq);
}

/** Parameter names this builder owns: existing ones in the base are replaced. */
const OWNED = new Set(['nbdroot', 'nbddev', 'netroot', 'nbd_host', 'nbd_name', 'nbd_port', 'rd.neednet']);

function owned(word: string, ifname: string): boolean {
  const name = paramName(word);
  if (name.startsWith('stiefel.') || OWNED.has(name)) return true;
  // Our interface's own ifname=/ip= settings; others stay.
  if ((name === 'ifname' || name === 'ip') && word.slice(name.length + 1).startsWith(`${ifname}:`)) return true;
  return false;
}

export function buildLaptopCmdline(o: LaptopCmdlineOptions): string {
  const { link, nbd } = o;
  const mac = link.mac.toLowerCase();
  if (!MAC.test(mac)) throw new CmdlineError(`'${link.mac}' is not a MAC address`);
  if (!IFNAME.test(link.interfaceName)) throw new CmdlineError(`'${link.interfaceName}' is not an interface name`);
  if (!isIpv4(link.serverAddress) && !isIpv6(link.serverAddress)) throw new CmdlineError(`'${link.serverAddress}' is not an IP address (without zone)`);
  if (!isIpv4(nbd.host) && !isIpv6(nbd.host)) throw new CmdlineError(`'${nbd.host}' is not an IP address (without zone)`);
  if (!Number.isInteger(nbd.port) || nbd.port < 1 || nbd.port > 65535) throw new CmdlineError(`NBD port ${nbd.port} is out of range`);
  if (!EXPORT.test(nbd.export)) throw new CmdlineError(`'${nbd.export}' is not a valid export name`);

  const words = splitCmdline(o.base).filter((w) => !owned(w, link.interfaceName));
  const nativeForm = o.attach === 'family' ? o.family : undefined;
  if (nativeForm === 'initramfs-tools' && words.some((w) => paramName(w) === 'ip')) {
    // We set ip=off; a second ip= would make the initramfs configure (and wait for) DHCP.
    for (let i = words.length - 1; i >= 0; i--) if (paramName(words[i]!) === 'ip') words.splice(i, 1);
  }

  const host6 = isIpv6(nbd.host);
  // A link-local host needs its zone wherever a tool connects to it.
  const zoned = isLinkLocal6(nbd.host) ? `${nbd.host}%${link.interfaceName}` : nbd.host;
  const added = [
    `stiefel.mac=${mac}`,
    `stiefel.ifname=${link.interfaceName}`,
    `stiefel.server=${link.serverAddress}`,
    `stiefel.nbd_host=${nbd.host}`,
    `stiefel.nbd_port=${nbd.port}`,
    `stiefel.nbd_export=${nbd.export}`,
    `stiefel.conf=${LINK_CONF_PATH}`,
  ];
  switch (nativeForm) {
    case 'initramfs-tools':
      added.push(`nbdroot=${host6 ? `[${zoned}]` : zoned}:${nbd.port}/${nbd.export}`, `nbddev=${DEFAULT_NBD_DEVICE}`, 'ip=off');
      break;
    case 'dracut':
      added.push('rd.neednet=1', `ifname=${link.interfaceName}:${mac}`, `ip=${link.interfaceName}:link6`);
      if (!host6) added.push(`netroot=nbd:${nbd.host}:${nbd.port === 10809 ? nbd.export : String(nbd.port)}`);
      break;
    case 'mkinitcpio':
      added.push(`nbd_host=${zoned}`, `nbd_name=${nbd.export}`, `nbd_port=${nbd.port}`);
      break;
  }
  const result = [...words, ...added].join(' ');
  if (Buffer.byteLength(result) >= MAX_CMDLINE_BYTES) {
    throw new CmdlineError(`the laptop OS's command line would be ${Buffer.byteLength(result)} bytes, more than the kernel's ${MAX_CMDLINE_BYTES - 1}: shorten server.boot.cmdline`);
  }
  return result;
}
