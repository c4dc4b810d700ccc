// The laptop's end of the disk link's WireGuard tunnel: one interface with a
// key pair made for this boot, and one peer at a time, the desktop being
// served, whose key pair is also made here and handed to it inside the
// authenticated payload (and from there to the laptop OS's initramfs inside
// the secrets cpio). The NBD server listens only on the tunnel address, so
// the disk is reachable through the tunnel alone.
//
// Addresses come from a unique-local /64 drawn for this boot: the laptop is
// PREFIX::1, each desktop session gets PREFIX::N (N = 2, 3, ...), so that a
// session's tunnel address names that session.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { runChecked, type CommandRunner } from '../disk/runner';
import type { WireGuardLink } from './link-settings';
import { generateWireGuardKeyPair, randomTunnelPrefix } from './keys';

export const WG_INTERFACE = 'stiefelwg';

export interface WireGuardLinkOptions {
  /** UDP port the laptop's end listens on. */
  port: number;
  ifname?: string;
  /** The /64 to use, e.g. `fd12:3456:789a:` (random when omitted). */
  prefix?: string;
  /** The cable's MTU (link.mtu); the tunnel's is WG_OVERHEAD less. The kernel's default (1420) when 1500 or omitted. */
  mtu?: number;
}

/** What WireGuard adds to each packet over IPv6: 40 IPv6 + 8 UDP + 16 header + 16 tag. */
export const WG_OVERHEAD = 80;

export interface WireGuardServer {
  readonly ifname: string;
  /** The laptop's tunnel address, without prefix length: where NBD listens. */
  readonly address: string;
  readonly publicKey: string;
  /** Makes keys and an address for a new desktop session and makes it the one peer. */
  addPeer(): Promise<WireGuardLink>;
  /** Bytes received from the current peer (`wg show IF transfer`); undefined without one. */
  received(): Promise<number | undefined>;
  /** Removes the interface. */
  close(): Promise<void>;
}

/** From `wg show IF transfer` (PUBKEY<TAB>RX<TAB>TX per peer): what `peer` sent us. */
export function receivedFrom(text: string, peer: string): number | undefined {
  for (const line of text.split('\n')) {
    const [key, rx] = line.trim().split('\t');
    if (key === peer && rx !== undefined && /^\d+$/.test(rx)) return Number(rx);
  }
  return undefined;
}

/**
 * Creates the interface (ip link add ... type wireguard), sets its key and
 * port, addresses it and brings it up. Undone by close(), and on failure.
 */
export async function startWireGuardServer(
  options: WireGuardLinkOptions,
  deps: { runner: CommandRunner; log: Logger },
): Promise<WireGuardServer> {
  const { runner, log } = deps;
  const ifname = options.ifname ?? WG_INTERFACE;
  const prefix = options.prefix ?? randomTunnelPrefix();
  const address = `${prefix}:1`;
  const keys = generateWireGuardKeyPair();
  const ip = (...args: string[]): Promise<string> => runChecked(runner, 'E_WIREGUARD', 'ip', args);

  // A stale interface of an earlier run goes first.
  await runner.run('ip', ['link', 'del', ifname]);
  const add = await runner.run('ip', ['link', 'add', ifname, 'type', 'wireguard']);
  if (add.code !== 0) {
    throw new StiefelError(
      'E_WIREGUARD',
      `cannot create the WireGuard interface ${ifname} (${add.stderr.trim() || `exit ${add.code}`}): load the wireguard module, or set server.wireguard.enabled: false for a trusted point-to-point cable`,
    );
  }
  let peerKey: string | undefined;
  let sessions = 1;
  try {
    // The private key goes through a file only root can read, removed at
    // once; never onto a command line. (Not stdin: Node's pipes are sockets,
    // which wg cannot fopen() as /dev/stdin.)
    const keyDir = await mkdtemp(join(tmpdir(), 'stiefelwg-'));
    try {
      const keyFile = join(keyDir, 'private.key');
      await writeFile(keyFile, `${keys.privateKey}\n`, { mode: 0o600 });
      await runChecked(runner, 'E_WIREGUARD', 'wg', ['set', ifname, 'listen-port', String(options.port), 'private-key', keyFile]);
    } finally {
      await rm(keyDir, { recursive: true, force: true });
    }
    // Inside the cable's MTU: WireGuard adds 80 bytes (IPv6, UDP, its header, the tag).
    if (options.mtu !== undefined && options.mtu !== 1500) await ip('link', 'set', 'dev', ifname, 'mtu', String(options.mtu - WG_OVERHEAD));
    await ip('addr', 'add', `${address}/64`, 'dev', ifname, 'nodad');
    await ip('link', 'set', ifname, 'up');
  } catch (err) {
    await runner.run('ip', ['link', 'del', ifname]);
    throw err;
  }
  log.info(`WireGuard tunnel ${ifname} up: ${address}, UDP ${options.port}; the disk is served only through it`);

  return {
    ifname,
    address,
    publicKey: keys.publicKey,
    async addPeer() {
      sessions += 1;
      const client = generateWireGuardKeyPair();
      const clientAddress = `${prefix}:${sessions.toString(16)}`;
      if (peerKey) await runChecked(runner, 'E_WIREGUARD', 'wg', ['set', ifname, 'peer', peerKey, 'remove']);
      await runChecked(runner, 'E_WIREGUARD', 'wg', ['set', ifname, 'peer', client.publicKey, 'allowed-ips', `${clientAddress}/128`]);
      peerKey = client.publicKey;
      log.debug(`WireGuard peer ${clientAddress} set`);
      return {
        clientPrivateKey: client.privateKey,
        clientAddress: `${clientAddress}/64`,
        serverPublicKey: keys.publicKey,
        serverAddress: address,
        serverPort: options.port,
      };
    },
    async received() {
      if (!peerKey) return undefined;
      const r = await runner.run('wg', ['show', ifname, 'transfer']);
      return r.code === 0 ? receivedFrom(r.stdout, peerKey) : undefined;
    },
    async close() {
      const r = await runner.run('ip', ['link', 'del', ifname]);
      if (r.code !== 0) log.warn(`could not remove ${ifname}: ${r.stderr.trim()}`);
    },
  };
}
