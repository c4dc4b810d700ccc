// Where an NBD server listens: parsing and printing of `--listen` values.
// Pure: no sockets.
//   127.0.0.1:10809   0.0.0.0   localhost:10900
//   [::1]:10809   [fe80::1%wg0]:10809   ::   fe80::1%wg0
//   unix:/run/stiefel/nbd.sock
import { isIP } from 'node:net';
import { NBD_DEFAULT_PORT } from './protocol';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export class ListenAddressError extends Error {}

export function parseListenAddress(text: string, defaultPort = NBD_DEFAULT_PORT): ListenAddress {
  const t = text.trim();
  if (t.startsWith('unix:')) {
    const path = t.slice(5);
    if (!path) throw new ListenAddressError(`'${text}' names no socket path; use unix:/path/to/socket`);
    if (path.includes('\0')) throw new ListenAddressError(`'${text}' contains a NUL byte`);
    return { kind: 'unix', path };
  }
  let host: string;
  let portText: string | undefined;
  if (t.startsWith('[')) {
    const close = t.indexOf(']');
    if (close < 0) throw new ListenAddressError(`'${text}' has no closing ']'; use [IPV6]:PORT, e.g. [::1]:10809`);
    host = t.slice(1, close);
    const rest = t.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) throw new ListenAddressError(`'${text}': expected ':PORT' after ']'`);
      portText = rest.slice(1);
    }
    if (isIP(stripScope(host)) !== 6) throw new ListenAddressError(`'${host}' is not an IPv6 address`);
  } else if ((t.match(/:/g) ?? []).length >= 2) {
    // A bare IPv6 address such as '::' or 'fe80::1%wg0': no port.
    host = t;
    if (isIP(stripScope(host)) !== 6) throw new ListenAddressError(`'${text}' is not an IPv6 address; write [IPV6]:PORT to give a port`);
  } else {
    const colon = t.indexOf(':');
    host = colon < 0 ? t : t.slice(0, colon);
    if (colon >= 0) portText = t.slice(colon + 1);
    if (!host) throw new ListenAddressError(`'${text}' names no host; use HOST:PORT, e.g. 0.0.0.0:${defaultPort}`);
    if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
      throw new ListenAddressError(`'${host}' is not an IP address or host name`);
    }
  }
  if (stripScope(host) !== host && !stripScope(host).toLowerCase().startsWith('fe80')) {
    // Only link-local addresses carry a zone.
    throw new ListenAddressError(`'${host}': a %zone is only meaningful on a link-local (fe80::) address`);
  }
  if (/%$/.test(host)) throw new ListenAddressError(`'${host}' has an empty zone; write e.g. fe80::1%eth0`);
  let port = defaultPort;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new ListenAddressError(`'${portText}' is not a TCP port (0-65535)`);
    }
    port = Number(portText);
  }
  return { kind: 'tcp', host, port };
}

function stripScope(host: string): string {
  const i = host.indexOf('%');
  return i < 0 ? host : host.slice(0, i);
}

/** `127.0.0.1:10809`, `[::1]:10809`, `unix:/path`. */
export function formatListenAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** An NBD URI (as nbdinfo, nbdcopy and qemu take it) for an export at a listen address. */
export function nbdUri(a: ListenAddress, exportName = ''): string {
  const name = encodeURIComponent(exportName);
  if (a.kind === 'unix') return `nbd+unix:///${name}?socket=${encodeURIComponent(a.path)}`;
  let host = a.host;
  if (host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  // RFC 6874: the zone separator is written %25 inside a URI.
  const h = host.includes(':') ? `[${host.replace('%', '%25')}]` : host;
  return `nbd://${h}:${a.port}/${name}`;
}
