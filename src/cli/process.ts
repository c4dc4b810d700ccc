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
