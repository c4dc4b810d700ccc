// The main process's side of the NBD server's worker processes
// (worker-process.ts): started before the server listens, each accepted
// connection handed to the worker serving the fewest, their counters and
// log lines brought back, and the extent-map messages passed between them.
// A worker that dies takes its connections with it (they are reported
// closed) and is replaced.
import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { SessionStats } from './transmission';
import { WORKER_LOGGERS, type FromWorker, type ToWorker, type WorkerInit } from './worker-messages';

export interface WorkerPoolOptions {
  count: number;
  /** Starts one worker process, with an IPC channel (child_process.fork). */
  spawn: () => ChildProcess;
  /** What every worker is told first; which of its debug lines are shown is read from `log`. */
  init: Omit<WorkerInit, 'debugging'>;
  log: Logger;
  /** A connection's counters, about twice a second while it is open. */
  onStats(id: number, stats: SessionStats): void;
  /** A connection ended (or its worker did). */
  onDone(id: number, reason: string, stats: SessionStats | undefined): void;
}

/** How long a worker may take to start and open the exports. */
const START_TIMEOUT_MS = 60_000;

class Worker {
  readonly proc: ChildProcess;
  readonly connections = new Set<number>();
  alive = true;
  /** Answered 'ready': only such a worker is replaced when it dies. */
  ready = false;
  constructor(proc: ChildProcess) {
    this.proc = proc;
  }
  send(message: ToWorker, handle?: Socket, done?: (error: Error | null) => void): void {
    if (!this.alive || !this.proc.connected) {
      done?.(new Error('the worker process is gone'));
      return;
    }
    if (handle) this.proc.send(message, handle, done);
    else this.proc.send(message);
  }
}

export class NbdWorkerPool {
  readonly #o: WorkerPoolOptions;
  readonly #workers: Worker[] = [];
  readonly #loggers = new Map<string, Logger>();
  /** Flushes waiting until the other workers dropped their extent maps. */
  readonly #flushes = new Map<number, { from: Worker; seq: number; waiting: Set<Worker> }>();
  #nextInvalidation = 1;
  #stopping = false;

  private constructor(options: WorkerPoolOptions) {
    this.#o = options;
  }

  /** Resolves once every worker has opened the exports; rejects (all stopped) when one cannot. */
  static async start(options: WorkerPoolOptions): Promise<NbdWorkerPool> {
    const pool = new NbdWorkerPool(options);
    try {
      await Promise.all(Array.from({ length: options.count }, () => pool.#startWorker()));
    } catch (err) {
      await pool.stop();
      throw err;
    }
    return pool;
  }

  /** Hands an accepted socket to the least busy worker. */
  assign(socket: Socket, id: number, refusal: string | undefined): void {
    const live = this.#workers.filter((w) => w.alive);
    const worker = live.reduce<Worker | undefined>((a, w) => (!a || w.connections.size < a.connections.size ? w : a), undefined);
    if (!worker) {
      socket.destroy();
      this.#o.onDone(id, 'no worker process to serve it', undefined);
      return;
    }
    worker.connections.add(id);
    const message: ToWorker = refusal === undefined ? { t: 'conn', id } : { t: 'conn', id, refusal };
    worker.send(message, socket, (err) => {
      if (!err) return;
      socket.destroy();
      if (worker.connections.delete(id)) this.#o.onDone(id, `could not hand it to a worker process: ${err.message}`, undefined);
    });
  }

  shutdown(): void {
    for (const w of this.#workers) w.send({ t: 'shutdown' });
  }

  destroy(reason: string): void {
    for (const w of this.#workers) w.send({ t: 'destroy', reason });
  }

  /** Closes the channels (each worker closes what it still serves and exits); resolves when all have exited. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      this.#workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.proc.exitCode !== null || w.proc.signalCode !== null) return resolve();
            w.proc.once('exit', () => resolve());
            if (w.proc.connected) w.proc.disconnect();
            else w.proc.kill('SIGKILL');
          }),
      ),
    );
  }

  #startWorker(): Promise<void> {
    const proc = this.#o.spawn();
    const worker = new Worker(proc);
    this.#workers.push(worker);
    return new Promise<void>((resolve, reject) => {
      let started = false;
      const fail = (why: string): void => {
        if (started) return;
        started = true;
        clearTimeout(timer);
        proc.kill('SIGKILL');
        reject(new StiefelError('E_NBD_WORKER', `an NBD worker process could not start: ${why}`));
      };
      const timer = setTimeout(() => fail(`no answer within ${START_TIMEOUT_MS / 1000} s`), START_TIMEOUT_MS);
      proc.on('message', (m: FromWorker) => {
        if (m.t === 'ready' && !started) {
          started = true;
          worker.ready = true;
          clearTimeout(timer);
          resolve();
        } else if (m.t === 'failed') fail(m.message);
        else this.#onMessage(worker, m);
      });
      proc.on('error', (err) => fail(err.message));
      proc.on('exit', (code, signal) => {
        fail(`it exited (${signal ?? `code ${code}`})`);
        this.#onExit(worker, signal ?? `code ${code}`);
      });
      const debugging = ['', ...WORKER_LOGGERS].filter((name) => this.#logger(name ? [name] : []).debugging);
      worker.send({ ...this.#o.init, debugging });
    });
  }

  #onMessage(from: Worker, m: FromWorker): void {
    switch (m.t) {
      case 'stats':
        for (const [id, stats] of m.connections) this.#o.onStats(id, stats);
        return;
      case 'done':
        if (from.connections.delete(m.id)) this.#o.onDone(m.id, m.reason, m.stats);
        return;
      case 'changed':
        for (const w of this.#workers) if (w !== from) w.send({ t: 'invalidate', seq: 0 });
        return;
      case 'flush': {
        const seq = this.#nextInvalidation++;
        const waiting = new Set(this.#workers.filter((w) => w !== from && w.alive && w.proc.connected));
        this.#flushes.set(seq, { from, seq: m.seq, waiting });
        for (const w of waiting) w.send({ t: 'invalidate', seq });
        this.#settleFlush(seq);
        return;
      }
      case 'invalidated':
        this.#flushes.get(m.seq)?.waiting.delete(from);
        this.#settleFlush(m.seq);
        return;
      case 'log': {
        const log = this.#logger(m.ns);
        log[m.level](m.message);
        return;
      }
      default:
        return;
    }
  }

  #settleFlush(seq: number): void {
    const f = this.#flushes.get(seq);
    if (!f || f.waiting.size > 0) return;
    this.#flushes.delete(seq);
    f.from.send({ t: 'flushed', seq: f.seq });
  }

  #onExit(worker: Worker, how: string): void {
    if (!worker.alive) return;
    worker.alive = false;
    const lost = [...worker.connections];
    worker.connections.clear();
    for (const id of lost) this.#o.onDone(id, `its worker process ended (${how})`, undefined);
    for (const [seq, f] of this.#flushes) {
      f.waiting.delete(worker);
      this.#settleFlush(seq);
    }
    const at = this.#workers.indexOf(worker);
    if (at >= 0) this.#workers.splice(at, 1);
    if (this.#stopping || !worker.ready) return;
    this.#o.log.warn(`an NBD worker process ended (${how}) with ${lost.length} connection(s); starting another`);
    this.#startWorker().catch((err: Error) => this.#o.log.warn(err.message));
  }

  #logger(ns: readonly string[]): Logger {
    const key = ns.join('\0');
    let log = this.#loggers.get(key);
    if (!log) {
      log = ns.reduce((l, n) => l.child(n), this.#o.log);
      this.#loggers.set(key, log);
    }
    return log;
  }
}
