// The one place that turns errors into exit codes and messages.
import { describeErrno, isErrnoException, StiefelError, UsageError } from '../errors';
import { createStreamLogger, parseDebugNamespaces } from '../log';
import { HelpRequested, type Command, type CommandContext } from './command';
import { VERSION } from '../version';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_BUG = 70;
/** A second SIGINT/SIGTERM: the shell's convention, 128 + SIGINT. */
export const EXIT_INTERRUPTED = 130;

function mainHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `stiefelctl ${VERSION}: boot the Linux installed on one computer on another over a network cable

Usage: stiefelctl COMMAND [OPTIONS]

Commands:
${lines.join('\n')}

Run 'stiefelctl COMMAND --help' for a command's options and examples.
Set STIEFEL_DEBUG=nbd,discovery,... (or *) for debug output on stderr.
`;
}

export interface MainIO {
  argv: string[];
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  stderrIsTTY: boolean;
  signal: AbortSignal;
}

export async function main(io: MainIO, commands: readonly Command[]): Promise<number> {
  const [name, ...rest] = io.argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(mainHelp(commands));
    return name === undefined ? EXIT_USAGE : EXIT_OK;
  }
  if (name === '--version' || name === '-V') {
    io.stdout(`stiefelctl ${VERSION}\n`);
    return EXIT_OK;
  }
  const command: Command | undefined = commands.find((c) => c.name === name);
  if (!command) {
    io.stderr(`stiefelctl: unknown command '${name}'; run 'stiefelctl --help' for the list\n`);
    return EXIT_USAGE;
  }
  const ctx: CommandContext = {
    log: createStreamLogger({ write: io.stderr, debugNamespaces: parseDebugNamespaces(io.env.STIEFEL_DEBUG) }),
    stdout: io.stdout,
    signal: io.signal,
    env: io.env,
    cwd: io.cwd,
    isTTY: io.stderrIsTTY,
  };
  try {
    return (await command.run(rest, ctx)) ?? EXIT_OK;
  } catch (err) {
    if (err instanceof HelpRequested) {
      io.stdout(command.help.endsWith('\n') ? command.help : `${command.help}\n`);
      return EXIT_OK;
    }
    if (err instanceof UsageError) {
      io.stderr(`stiefelctl ${command.name}: ${err.message} (see 'stiefelctl ${command.name} --help')\n`);
      return EXIT_USAGE;
    }
    if (err instanceof StiefelError) {
      io.stderr(`stiefelctl ${command.name}: ${err.message}\n`);
      if (parseDebugNamespaces(io.env.STIEFEL_DEBUG).size > 0 && err.cause) {
        io.stderr(`caused by: ${err.cause instanceof Error ? err.cause.stack : String(err.cause)}\n`);
      }
      return EXIT_FAILURE;
    }
    // A system call that failed on the user's paths or rights is not a bug: one line.
    if (isErrnoException(err) && err.syscall) {
      const where = err.path ? ` ${err.path}` : '';
      io.stderr(`stiefelctl ${command.name}: cannot ${err.syscall}${where}: ${describeErrno(err)}\n`);
      return EXIT_FAILURE;
    }
    io.stderr(`stiefelctl ${command.name}: internal error, please report it:\n`);
    io.stderr(`${err instanceof Error ? err.stack : String(err)}\n`);
    return EXIT_BUG;
  }
}
