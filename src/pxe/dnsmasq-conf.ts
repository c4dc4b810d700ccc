// dnsmasq's configuration for one link's boot services: DHCP for PXE clients
// only (or ProxyDHCP when another DHCP server answers on the link) and TFTP
// for the first-stage iPXE. Pure: text in, text out; every value is checked
// before it reaches the file, since dnsmasq reads one option per line and
// splits values at commas.
import { isIPv4 } from 'node:net';
import { posix } from 'node:path';
import { StiefelError } from '../errors';

/** 'dhcp': nobody else hands out addresses on the link; 'proxy': another DHCP server does. */
export type PxeMode = 'dhcp' | 'proxy';

/** The first-stage boot files served by TFTP, by what the PXE ROM says it is. */
export const TFTP_BOOT_FILES = {
  /** Legacy BIOS PXE ROMs (client architecture 0). */
  bios: 'undionly.kpxe',
  /** UEFI x86_64 (client architecture 7 or 9). */
  efi64: 'ipxe.efi',
} as const;

/** The iPXE script on the laptop's HTTP server. */
export const BOOT_SCRIPT_PATH = '/pxe/boot.ipxe';

/**
 * RFC 4578 section 2.1, option 93 (Client System Architecture): 0 is
 * "Intel x86PC"; 7 is "EFI BC" and 9 "EFI x86-64", and x86_64 UEFI firmware
 * sends either.
 */
const CLIENT_ARCH = { x86PC: 0, EFI_BC: 7, EFI_X86_64: 9 } as const;

/** iPXE's own encapsulated options (its "175" space) are present only in requests from iPXE. */
const IPXE_ENCAP_OPTION = 175;

/** Leases on the laptop's own link: a cable between two machines needs few and short ones. */
const LEASE_TIME = '1h';

export interface DnsmasqLinkOptions {
  /** The network interface, e.g. enp3s0. */
  interface: string;
  mode: PxeMode;
  /** The laptop's IPv4 address on the link: TFTP and HTTP are served from it. */
  address: string;
  /** Prefix length of the link's subnet (the address's, or the other DHCP server's). */
  prefixLength: number;
  /** Mode 'dhcp': the addresses handed out, inside the subnet. */
  range?: { first: string; last: string };
  /** TCP port of the HTTP server with the iPXE script. */
  httpPort: number;
  /** Directory holding only the TFTP boot files. */
  tftpRoot: string;
  /** Where dnsmasq keeps its leases (a run directory). */
  leaseFile: string;
  /** The user dnsmasq runs as after start; it owns the TFTP files (tftp-secure). */
  user: string;
}

function invalid(what: string, value: unknown, expected: string): never {
  throw new StiefelError('E_PXE_CONFIG', `PXE boot services: ${what} ${JSON.stringify(value)} is not ${expected}`);
}

/** Linux accepts up to 15 bytes, no '/', ':' or white space; we take the names real NICs have. */
export function checkInterfaceName(name: string): string {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$/.test(name) || name === '.' || name === '..') {
    invalid('interface name', name, 'a network interface name (1 to 15 letters, digits, _ . -)');
  }
  return name;
}

export function checkIpv4(address: string, what = 'IPv4 address'): string {
  if (!isIPv4(address)) invalid(what, address, 'an IPv4 address (a.b.c.d)');
  return address;
}

function checkPath(path: string, what: string): string {
  // A comma would start dnsmasq's next value (tftp-root=DIR,INTERFACE).
  if (!posix.isAbsolute(path) || /[\s,]/.test(path) || posix.normalize(path) !== path) {
    invalid(what, path, 'an absolute, normalised path without commas or white space');
  }
  return path;
}

export function ipv4ToNumber(address: string): number {
  return checkIpv4(address).split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

export function numberToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}

export function prefixNetmask(prefixLength: number): string {
  return numberToIpv4(prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0);
}

export function networkAddress(address: string, prefixLength: number): string {
  return numberToIpv4((ipv4ToNumber(address) & ipv4ToNumber(prefixNetmask(prefixLength))) >>> 0);
}

/** The iPXE script's URL on this link. */
export function bootScriptUrl(address: string, httpPort: number): string {
  return `http://${checkIpv4(address)}:${httpPort}${BOOT_SCRIPT_PATH}`;
}

/** Link `n` (1 to 254) of config server.pxe.subnet A.B.0.0/16: the laptop is A.B.N.1/24, leases A.B.N.2 to A.B.N.9. */
export function linkAddressing(subnet: string, n: number): { address: string; prefixLength: number; range: { first: string; last: string } } {
  const m = /^(\d+\.\d+)\.0\.0\/16$/.exec(subnet);
  if (!m || !isIPv4(`${m[1]}.0.0`)) invalid('subnet', subnet, 'an IPv4 /16 (A.B.0.0/16)');
  if (!Number.isInteger(n) || n < 1 || n > 254) invalid('link number', n, 'between 1 and 254');
  const base = `${m[1]}.${n}`;
  return { address: `${base}.1`, prefixLength: 24, range: { first: `${base}.2`, last: `${base}.9` } };
}

function checkOptions(o: DnsmasqLinkOptions): void {
  checkInterfaceName(o.interface);
  if (o.mode !== 'dhcp' && o.mode !== 'proxy') invalid('mode', o.mode, "'dhcp' or 'proxy'");
  checkIpv4(o.address);
  if (!Number.isInteger(o.prefixLength) || o.prefixLength < 8 || o.prefixLength > 30) invalid('prefix length', o.prefixLength, 'between 8 and 30');
  if (!Number.isInteger(o.httpPort) || o.httpPort < 1 || o.httpPort > 65535) invalid('HTTP port', o.httpPort, 'a TCP port (1 to 65535)');
  checkPath(o.tftpRoot, 'TFTP root');
  checkPath(o.leaseFile, 'lease file');
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(o.user)) invalid('user', o.user, 'a user name');
  if (o.mode === 'dhcp') {
    if (!o.range) invalid('range', o.range, "given in mode 'dhcp'");
    const net = networkAddress(o.address, o.prefixLength);
    const own = ipv4ToNumber(o.address);
    const [first, last] = [ipv4ToNumber(checkIpv4(o.range.first, 'range start')), ipv4ToNumber(checkIpv4(o.range.last, 'range end'))];
    for (const a of [o.range.first, o.range.last]) {
      if (networkAddress(a, o.prefixLength) !== net) invalid('range address', a, `inside ${net}/${o.prefixLength}`);
    }
    if (first > last || (own >= first && own <= last)) invalid('range', `${o.range.first}-${o.range.last}`, `an ascending range without ${o.address}`);
  }
}

/** The whole configuration file for one link; dnsmasq runs with `--conf-file=FILE --keep-in-foreground`. */
export function dnsmasqConf(o: DnsmasqLinkOptions): string {
  checkOptions(o);
  const netmask = prefixNetmask(o.prefixLength);
  const lines = [
    `# stiefelsystem PXE boot services on ${o.interface} (${o.mode === 'dhcp' ? 'DHCP for PXE clients only' : 'ProxyDHCP: another server hands out addresses'})`,
    '# Generated at each start; not read from /etc/dnsmasq.conf.',
    'port=0',
    `interface=${o.interface}`,
    // dnsmasq adds lo on its own; one instance per link must not share it.
    'except-interface=lo',
    'bind-interfaces',
    'no-resolv',
    'no-hosts',
    `user=${o.user}`,
    'pid-file=',
    'log-facility=-',
    `dhcp-leasefile=${o.leaseFile}`,
    o.mode === 'dhcp'
      ? `dhcp-range=${o.range!.first},${o.range!.last},${netmask},${LEASE_TIME}`
      : `dhcp-range=${networkAddress(o.address, o.prefixLength)},proxy,${netmask}`,
    ...(o.mode === 'dhcp'
      ? [
          // The link is ours (the probe found no server), so no 3 s ping
          // before the first offer, and requests for unknown leases answered.
          'dhcp-authoritative',
          'no-ping',
          // No router and no DNS server: the desktop only boots from us.
          'dhcp-option=option:router',
          'dhcp-option=option:dns-server',
        ]
      : []),
    // Only PXE ROMs and iPXE (both say PXEClient in option 60) get an answer.
    'dhcp-vendorclass=set:pxe,PXEClient',
    'dhcp-ignore=tag:!pxe',
    `dhcp-match=set:bios,option:client-arch,${CLIENT_ARCH.x86PC}`,
    `dhcp-match=set:efi64,option:client-arch,${CLIENT_ARCH.EFI_BC}`,
    `dhcp-match=set:efi64,option:client-arch,${CLIENT_ARCH.EFI_X86_64}`,
    `dhcp-match=set:ipxe,${IPXE_ENCAP_OPTION}`,
    'dhcp-userclass=set:ipxe,iPXE',
    // iPXE, the ROM's own or the one we served, fetches the script over HTTP.
    `dhcp-boot=tag:ipxe,${bootScriptUrl(o.address, o.httpPort)}`,
    ...(o.mode === 'dhcp'
      ? [`dhcp-boot=tag:!ipxe,tag:bios,${TFTP_BOOT_FILES.bios}`, `dhcp-boot=tag:!ipxe,tag:efi64,${TFTP_BOOT_FILES.efi64}`]
      : [
          // ProxyDHCP answers PXE ROMs through the PXE menu options (43), as
          // dnsmasq's manual says proxy mode needs; one entry boots at once.
          `pxe-service=tag:!ipxe,x86PC,"stiefelsystem",${TFTP_BOOT_FILES.bios}`,
          `pxe-service=tag:!ipxe,BC_EFI,"stiefelsystem",${TFTP_BOOT_FILES.efi64}`,
          `pxe-service=tag:!ipxe,x86-64_EFI,"stiefelsystem",${TFTP_BOOT_FILES.efi64}`,
        ]),
    'enable-tftp',
    `tftp-root=${o.tftpRoot}`,
    // Only files owned by the user dnsmasq runs as; paths with '..' are
    // refused once a root is set.
    'tftp-secure',
    'tftp-max=8',
  ];
  return `${lines.join('\n')}\n`;
}
