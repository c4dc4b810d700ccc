// A worker process of the NBD server (server.ts, option `workers`): it
// serves the connections the main process hands it, each on this process's
// own event loop, so that several connections of one client (nbdcopy's,
// `nbd-client -C`) use several CPUs.
//
// It opens every export again by path: the same file, the same page cache,
// so a flush (fdatasync) on any connection makes every process's completed
// writes durable, as NBD_FLAG_CAN_MULTI_CONN promises. What is not shared
// is each process's map of the file's holes (block status): a process that
// changes the file tells the others through the main process (at most every
// CHANGED_EVERY_MS), and a flush is answered only once every other worker
// has dropped its map, so block status after a flush sees every write
// completed before it, on any connection.
//
// The main process decides when connections close; when it goes away (its
// IPC channel closes), every connection is cut and the worker exits.
import type { Socket } from 'node:net';
import type { Logger } from '../log';
import type { Backend } from './backend';
import { FileBackend } from './backend-file';
import { readOnlyBackend } from './backend-read-only';
import { MemoryBudget } from './budget';
import { BufferPool } from './buffer-pool';
import { exportTable, serveSocket, type ConnectionSettings } from './connection';
import type { NbdExport, NbdSession } from './session';
import { WORKER_LOGGERS, type FromWorker, type ToWorker, type WorkerInit } from './worker-messages';

/** How often at most a worker says it changed a file (between flushes). */
export const CHANGED_EVERY_MS = 100;

/** The environment variable that makes stiefelctl's entry point a worker instead of the CLI. */
export const NBD_WORKER_ENV = 'STIEFEL_NBD_WORKER';

/** The worker's side of Node's IPC channel to the main process (src/cli/process.ts makes it). */
export interface WorkerIpc {
  send(message: FromWorker): void;
  on(handler: (message: ToWorker, handle: unknown) => void): void;
  onDisconnect(handler: () => void): void;
  exit(code: number): void;
}

/** Serves what the main process hands over until its channel closes. */
export function runNbdWorker(ipc: WorkerIpc): void {
  // Until the init message says which are shown, no debug lines are sent.
  let debugging: ReadonlySet<string> = new Set();
  const log = ipcLogger(ipc, [], () => debugging.has(''));
  const [backendLog, connLog] = WORKER_LOGGERS.map((name) => ipcLogger(ipc, [name], () => debugging.has(name))) as [Logger, Logger];
  const sessions = new Map<number, NbdSession>();
  const files: FileBackend[] = [];
  let settings: ConnectionSettings | undefined;
  let flushSeq = 0;
  const flushWaiters = new Map<number, () => void>();
  let lastChanged = -Infinity;

  const changed = (): void => {
    const now = performance.now();
    if (now - lastChanged < CHANGED_EVERY_MS) return;
    lastChanged = now;
    ipc.send({ t: 'changed' });
  };
  const othersForgot = (): Promise<void> =>
    new Promise((resolve) => {
      const seq = ++flushSeq;
      flushWaiters.set(seq, resolve);
      ipc.send({ t: 'flush', seq });
    });

  const init = async (m: WorkerInit): Promise<void> => {
    debugging = new Set(m.debugging);
    const list: NbdExport[] = [];
    for (const e of m.exports) {
      const file = await FileBackend.open(e.path, { readOnly: e.readOnly, exclusive: false }, { log: backendLog });
      files.push(file);
      const backend = sharedBackend(e.readOnly ? readOnlyBackend(file) : file, changed, othersForgot);
      list.push({ name: e.name, description: e.description, backend });
    }
    settings = {
      exports: exportTable(list),
      blockSize: m.blockSize,
      maxInflightBytes: m.maxInflightBytes,
      serverBudget: new MemoryBudget(m.maxServerInflightBytes),
      pool: new BufferPool({ maxPooledBytes: 64 * 1024 * 1024 }),
      handshakeTimeoutMs: m.handshakeTimeoutMs,
    };
  };

  const stats = setInterval(() => {
    if (sessions.size === 0) return;
    ipc.send({ t: 'stats', connections: [...sessions].map(([id, s]) => [id, s.stats]) });
  }, 500);
  stats.unref();

  const exitWhenIdle = async (): Promise<void> => {
    for (const s of sessions.values()) s.destroy('the server process went away');
    await Promise.all([...sessions.values()].map((s) => s.done));
    for (const f of files) await f.close();
    ipc.exit(0);
  };

  ipc.on((m, handle) => {
    switch (m.t) {
      case 'init':
        init(m).then(
          () => ipc.send({ t: 'ready' }),
          (err: Error) => ipc.send({ t: 'failed', message: err.message }),
        );
        return;
      case 'conn': {
        const socket = handle as Socket | undefined;
        if (!socket || !settings) return;
        // Nothing may be read before the session's transport takes the handle over.
        socket.pause();
        const session = serveSocket(socket, settings, m.refusal, connLog);
        sessions.set(m.id, session);
        void session.done.then((reason) => {
          sessions.delete(m.id);
          ipc.send({ t: 'done', id: m.id, reason, stats: session.stats });
        });
        return;
      }
      case 'shutdown':
        for (const s of sessions.values()) s.shutdown();
        return;
      case 'destroy':
        for (const s of sessions.values()) s.destroy(m.reason);
        return;
      case 'invalidate':
        for (const f of files) f.invalidateExtents();
        ipc.send({ t: 'invalidated', seq: m.seq });
        return;
      case 'flushed':
        flushWaiters.get(m.seq)?.();
        flushWaiters.delete(m.seq);
        return;
    }
  });
  ipc.onDisconnect(() => void exitWhenIdle());
}

/**
 * The export as a worker serves it: changes are announced, and a flush
 * returns once the file is durable and every other worker forgot its
 * extent maps.
 */
function sharedBackend(inner: Backend, changed: () => void, othersForgot: () => Promise<void>): Backend {
  return {
    size: inner.size,
    capabilities: inner.capabilities,
    description: inner.description,
    pread: (buf, offset) => inner.pread(buf, offset),
    pwrite: (data, offset, options) => {
      changed();
      return inner.pwrite(data, offset, options);
    },
    flush: async () => {
      await Promise.all([inner.flush(), othersForgot()]);
    },
    trim: (offset, length, options) => {
      changed();
      return inner.trim(offset, length, options);
    },
    writeZeroes: (offset, length, options) => {
      changed();
      return inner.writeZeroes(offset, length, options);
    },
    cache: (offset, length) => inner.cache(offset, length),
    extents: (offset, length, max) => inner.extents(offset, length, max),
    close: () => inner.close(),
  };
}

/** Log lines go to the main process, which prints them through its own logger; debug lines only while `shown` says it shows them. */
function ipcLogger(ipc: WorkerIpc, ns: string[], shown: () => boolean): Logger {
  return {
    info: (message) => ipc.send({ t: 'log', level: 'info', ns, message }),
    warn: (message) => ipc.send({ t: 'log', level: 'warn', ns, message }),
    debug: (message) => {
      if (shown()) ipc.send({ t: 'log', level: 'debug', ns, message });
    },
    get debugging() {
      return shown();
    },
    child: (name) => ipcLogger(ipc, [...ns, name], shown),
  };
}
