// What the NBD server's main process (worker-pool.ts) and its worker
// processes (worker-process.ts) say to each other over Node's IPC channel.
// Structured-clone values only; a connection's socket travels as the handle
// of a 'conn' message.
import type { BlockSizeConstraints } from './codec';
import type { SessionStats } from './transmission';

/** How a worker opens an export again: the same file or block device, by path. */
export interface WorkerExport {
  name: string;
  description?: string;
  path: string;
  readOnly: boolean;
}

export interface WorkerInit {
  t: 'init';
  exports: WorkerExport[];
  blockSize: BlockSizeConstraints;
  maxInflightBytes: number;
  /** This worker's part of the server's budget. */
  maxServerInflightBytes: number;
  handshakeTimeoutMs: number;
  /** Which of the worker's loggers ('' for its root, or a name of WORKER_LOGGERS) the main process shows debug lines of. */
  debugging: string[];
}

/**
 * The loggers a worker makes below its root. Its debug lines travel to the
 * main process only for those whose lines are shown there: a client that
 * makes every request fail would otherwise fill the channel with lines
 * nobody reads (a logger below one of these follows its parent).
 */
export const WORKER_LOGGERS = ['backend', 'conn'] as const;

export type ToWorker =
  | WorkerInit
  /** A connection (its socket is the message's handle). */
  | { t: 'conn'; id: number; refusal?: string }
  /** Answer what is in flight, then close every connection. */
  | { t: 'shutdown' }
  | { t: 'destroy'; reason: string }
  /** Another worker changed the file: forget the extent maps; answer with 'invalidated'. */
  | { t: 'invalidate'; seq: number }
  /** The answer to this worker's 'flush' message. */
  | { t: 'flushed'; seq: number };

export type FromWorker =
  | { t: 'ready' }
  | { t: 'failed'; message: string }
  | { t: 'stats'; connections: Array<[number, SessionStats]> }
  | { t: 'done'; id: number; reason: string; stats: SessionStats }
  /** This worker changed a file (the first change since the last flush). */
  | { t: 'changed' }
  /** Before a flush is answered: every other worker must have forgotten its extent maps. */
  | { t: 'flush'; seq: number }
  | { t: 'invalidated'; seq: number }
  | { t: 'log'; level: 'info' | 'warn' | 'debug'; ns: string[]; message: string };
