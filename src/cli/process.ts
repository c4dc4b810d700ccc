// The only file that touches `process`: arguments, environment, signals, exit.
import type { Command } from './command';
import { EXIT_BUG, EXIT_INTERRUPTED, EXIT_OK, main } from './main';

export function runFromProcess(commands: readonly Command[]): void {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    interrupts += 1;
    if (interrupts > 1) {
      process.stderr.write(`stiefelctl: ${signal} again, exiting now\n`);
      process.exit(EXIT_INTERRUPTED);
    }
    controller.abort(new Error(`interrupted by ${signal}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // stderr's reader gone (a pipe closed, a console detached): the messages
  // have nowhere to go, but the work goes on; a server must not die of it.
  process.stderr.on('error', () => undefined);
  // stdout closed early (`stiefelctl ... | head`) is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT_OK);
    throw err;
  });

  main({
    argv: process.argv.slice(2),
    env: process.env,
    cwd: process.cwd(),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    stderrIsTTY: Boolean(process.stderr.isTTY),
    signal: controller.signal,
  }, commands).then(
    (code) => {
      process.exitCode = code;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
    (err: unknown) => {
      process.stderr.write(`stiefelctl: internal error: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = EXIT_BUG;
    },
  );
}

/** A worker process's side of Node's IPC channel to the process that forked it. */
export interface IpcWorkerChannel<In, Out> {
  send(message: Out): void;
  on(handler: (message: In, handle: unknown) => void): void;
  onDisconnect(handler: () => void): void;
  exit(code: number): void;
}

/**
 * Started by a parent through child_process.fork with `envName` set: runs
 * `worker` instead of the CLI and returns true. The worker ignores SIGINT
 * and SIGTERM (a terminal's Ctrl-C reaches the whole process group; the
 * parent decides when it ends) and must exit when the channel closes.
 */
export function runWorkerIfAsked<In, Out>(envName: string, worker: (ipc: IpcWorkerChannel<In, Out>) => void): boolean {
  if (process.env[envName] !== '1' || !process.send) return false;
  delete process.env[envName];
  const send = process.send.bind(process);
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  process.stderr.on('error', () => undefined);
  worker({
    send: (m) => {
      if (process.connected) send(m);
    },
    on: (h) => process.on('message', (m, handle) => h(m as In, handle)),
    onDisconnect: (h) => process.on('disconnect', h),
    exit: (code) => process.exit(code),
  });
  return true;
}
