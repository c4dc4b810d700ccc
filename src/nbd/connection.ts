// One accepted socket, served: its session over the socket's own transport,
// closed when the handshake takes too long. The same in the server's one
// process (server.ts) and in each of its worker processes (worker-process.ts).
import type { Socket } from 'node:net';
import type { Logger } from '../log';
import type { MemoryBudget } from './budget';
import type { BufferPool } from './buffer-pool';
import type { BlockSizeConstraints } from './codec';
import { NbdSession, type ExportTable, type NbdExport } from './session';
import { acceptedSocketTransport } from './transport';

export interface ConnectionSettings {
  exports: ExportTable;
  blockSize: BlockSizeConstraints;
  maxInflightBytes: number;
  serverBudget: MemoryBudget;
  pool: BufferPool;
  handshakeTimeoutMs: number;
}

/** Starts the session; its `done` resolves with the reason once it ended. */
export function serveSocket(socket: Socket, settings: ConnectionSettings, refusal: string | undefined, log: Logger): NbdSession {
  const session = new NbdSession(
    acceptedSocketTransport(socket, { pool: settings.pool }),
    {
      exports: settings.exports,
      blockSize: settings.blockSize,
      maxInflightBytes: settings.maxInflightBytes,
      serverBudget: settings.serverBudget,
      pool: settings.pool,
      refusal,
    },
    { log },
  );
  const timer = setTimeout(() => {
    if (session.phase === 'handshake') session.destroy('handshake timed out');
  }, settings.handshakeTimeoutMs);
  timer.unref();
  void session.done.then(() => clearTimeout(timer));
  session.start();
  return session;
}

/** Exports by name; the first is also the default, selected by the empty name. */
export function exportTable(list: readonly NbdExport[]): ExportTable {
  const byName = new Map(list.map((e) => [e.name, e]));
  return {
    lookup: (name) => byName.get(name) ?? (name === '' ? list[0] : undefined),
    list: () => list,
  };
}
