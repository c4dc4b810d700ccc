// The secrets cpio appended to the laptop OS's initrd: one small archive with
// /etc/stiefelsystem/link.conf, which the laptop OS's initramfs (the attach
// script of setup-server-os) reads to set up the link: the NIC, the addresses, the NBD
// export and, with WireGuard, this boot's keys. Keys live only here (mode
// 0600 inside the initramfs), never on the kernel command line. Pure.
//
// link.conf is shell-sourceable KEY=VALUE lines; every value is checked to
// contain only characters that need no quoting.
import { encodeNewc } from '../cpio/newc';
import { LINK_CONF_PATH } from '../cmdline/laptop-cmdline';
import type { WireGuardLink } from '../wireguard/link-settings';
import type { GoodbyeLink } from '../payload/manifest';

export { LINK_CONF_PATH };

export interface LinkConf {
  mac: string;
  interfaceName: string;
  /** The laptop's address on the link, no zone. */
  serverAddress: string;
  nbdHost: string;
  nbdPort: number;
  nbdExport: string;
  /** Logical block size to attach the disk with (the laptop disk's own). */
  nbdBlockSize: number;
  /** TCP connections to open to the disk (nbd-client -C), when more than one. */
  nbdConnections?: number;
  wireguard?: WireGuardLink;
  /** Where and with which token the laptop OS says goodbye as it shuts down. */
  goodbye?: GoodbyeLink;
  /** The cable's MTU, when the laptop asks for one (the tunnel's is 80 less). */
  mtu?: number;
}

const SAFE = /^[A-Za-z0-9_.:+/=%@,-]*$/;

export function encodeLinkConf(c: LinkConf): string {
  const pairs: Array<[string, string | number]> = [
    ['STIEFEL_MAC', c.mac],
    ['STIEFEL_IFNAME', c.interfaceName],
    ['STIEFEL_SERVER', c.serverAddress],
    ['STIEFEL_NBD_HOST', c.nbdHost],
    ['STIEFEL_NBD_PORT', c.nbdPort],
    ['STIEFEL_NBD_EXPORT', c.nbdExport],
    ['STIEFEL_NBD_BLOCK_SIZE', c.nbdBlockSize],
  ];
  if (c.nbdConnections !== undefined) pairs.push(['STIEFEL_NBD_CONNECTIONS', c.nbdConnections]);
  if (c.wireguard) {
    const w = c.wireguard;
    pairs.push(
      ['STIEFEL_WG_PRIVATE_KEY', w.clientPrivateKey],
      ['STIEFEL_WG_ADDRESS', w.clientAddress],
      ['STIEFEL_WG_PEER_PUBLIC_KEY', w.serverPublicKey],
      ['STIEFEL_WG_PEER_ADDRESS', w.serverAddress],
      ['STIEFEL_WG_PEER_PORT', w.serverPort],
    );
  }
  if (c.goodbye) pairs.push(['STIEFEL_GOODBYE_PORT', c.goodbye.port], ['STIEFEL_GOODBYE_TOKEN', c.goodbye.token]);
  if (c.mtu !== undefined) pairs.push(['STIEFEL_LINK_MTU', c.mtu]);
  const lines = ['# stiefelsystem: settings of the link to the laptop for this boot only.', '# Written by stiefelctl client; sourced by the initramfs attach script.'];
  for (const [k, v] of pairs) {
    const text = String(v);
    if (!SAFE.test(text)) throw new RangeError(`link.conf value of ${k} contains characters that need quoting`);
    lines.push(`${k}=${text}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Reads link.conf back (the initramfs script's view, for tests and tools). */
export function parseLinkConf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return out;
}

/** The archive: etc/, etc/stiefelsystem/ (0700), link.conf (0600), fixed times. */
export function encodeSecretsCpio(c: LinkConf): Buffer {
  const path = LINK_CONF_PATH.slice(1);
  return encodeNewc(
    [
      { type: 'dir', path: 'etc', mode: 0o755 },
      { type: 'dir', path: 'etc/stiefelsystem', mode: 0o700 },
      { type: 'file', path, data: Buffer.from(encodeLinkConf(c)), mode: 0o600 },
    ],
    { mtime: 0 },
  );
}
