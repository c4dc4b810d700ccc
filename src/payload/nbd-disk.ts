// The disk served over NBD by `stiefelctl server`: issue 2's NBD server with
// a file backend for `server.disk`, its admission tied to the one-desktop lock
// (boot-server.ts), listening on every address (the link is link-local IPv6).
import { FileBackend, startNbdServer, type NbdPeer } from '../nbd';
import { peerHost } from './client-lock';
import type { StartDiskService } from './boot-server';

export const startNbdDiskService: StartDiskService = async (o, ctx) => {
  const backend = await FileBackend.open(o.path, {}, { log: ctx.log });
  try {
    const handle = await startNbdServer(
      {
        exports: [{ name: o.exportName, description: "the laptop's disk", backend }],
        listen: { kind: 'tcp', host: '::', port: o.port },
        admit: (peer: NbdPeer) => {
          const d = o.admit(peerHost(peer.address));
          return d.ok ? true : { refuse: d.message };
        },
        onDisconnect: (connection) => {
          if (connection.refused === undefined) o.disconnected(peerHost(connection.peer.address));
        },
      },
      { log: ctx.log, signal: ctx.signal },
    );
    const port = handle.address.kind === 'tcp' ? handle.address.port : o.port;
    return {
      port,
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
