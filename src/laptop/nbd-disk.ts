// The disk served over NBD by `stiefelctl server`: the NBD server of `nbd-serve` with
// a file backend for `server.disk`, its admission tied to the one-desktop lock
// (server-role.ts). It listens on the WireGuard tunnel address when the link
// is encrypted, else on every address (the cable is link-local IPv6).
import { readFile, stat } from 'node:fs/promises';
import { CLIENT_DISCONNECTED, FileBackend, startNbdServer, type NbdPeer } from '../nbd';
import { peerHost } from './client-lock';
import type { StartDiskService } from './server-role';

/**
 * The logical block size of a block device (what its partition table counts
 * in), from sysfs; 512 for a regular file or when sysfs cannot tell.
 */
export async function logicalBlockSize(path: string, sysfs = '/sys'): Promise<number> {
  const st = await stat(path);
  if (!st.isBlockDevice()) return 512;
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((Math.floor(st.rdev / 0x100000) & 0xfff) << 8);
  // A partition has no queue of its own: its disk's is one level up.
  for (const rel of ['queue/logical_block_size', '../queue/logical_block_size']) {
    try {
      const n = Number((await readFile(`${sysfs}/dev/block/${major}:${minor}/${rel}`, 'utf8')).trim());
      if (Number.isInteger(n) && n >= 512 && n <= 65536) return n;
    } catch {
      // try the next place
    }
  }
  return 512;
}

export const startNbdDiskService: StartDiskService = async (o, ctx) => {
  const blockSize = await logicalBlockSize(o.path);
  const backend = await FileBackend.open(o.path, {}, { log: ctx.log });
  // Bytes of the admitted connections that ended; the open ones are read live.
  const ended = { bytesRead: 0, bytesWritten: 0, errors: 0 };
  try {
    const handle = await startNbdServer(
      {
        exports: [{ name: o.exportName, description: "the laptop's disk", backend }],
        listen: { kind: 'tcp', host: o.host ?? '::', port: o.port },
        maxConnectionsPerPeer: o.connections,
        admit: (peer: NbdPeer) => {
          const d = o.admit(peerHost(peer.address));
          return d.ok ? true : { refuse: d.message };
        },
        onDisconnect: (connection, reason) => {
          if (connection.refused !== undefined) return;
          ended.bytesRead += connection.stats.bytesRead;
          ended.bytesWritten += connection.stats.bytesWritten;
          ended.errors += connection.stats.errors;
          o.disconnected(peerHost(connection.peer.address), { detached: reason === CLIENT_DISCONNECTED });
        },
      },
      { log: ctx.log, signal: ctx.signal },
    );
    const port = handle.address.kind === 'tcp' ? handle.address.port : o.port;
    return {
      port,
      blockSize,
      traffic: () => {
        const t = { ...ended, inFlight: 0 };
        for (const c of handle.connections()) {
          if (c.refused !== undefined) continue;
          t.bytesRead += c.stats.bytesRead;
          t.bytesWritten += c.stats.bytesWritten;
          t.inFlight += c.stats.inFlight;
          t.errors += c.stats.errors;
        }
        return t;
      },
      close: async () => {
        await handle.close();
        await backend.close();
      },
    };
  } catch (err) {
    await backend.close();
    throw err;
  }
};
