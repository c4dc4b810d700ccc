import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors';
import type { Logger } from '../log';

/** What a command gets from the CLI: it never touches process.* itself. */
export interface CommandContext {
  /** Progress and warnings, on stderr. */
  log: Logger;
  /** Results (tables, JSON), on stdout. */
  stdout: (text: string) => void;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  /** Whether stderr is a terminal (progress bars redraw in place). */
  isTTY: boolean;
}

export interface Command {
  name: string;
  /** One line for `stiefelctl --help`. */
  summary: string;
  /** Full `stiefelctl NAME --help` text: usage, options, examples. */
  help: string;
  /** Resolves to the exit code (0 when undefined). */
  run(argv: string[], ctx: CommandContext): Promise<number | void>;
}

export class HelpRequested extends Error {}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * util.parseArgs with the CLI's conventions: `--help`/`-h` anywhere shows the
 * command's help, and every parse error becomes a one-line UsageError.
 */
export function parseCommandArgs<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  positionals: { min: number; max: number; names: string },
) {
  if (argv.includes('--help') || argv.includes('-h')) throw new HelpRequested();
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    throw new UsageError(message.replace(/\. To specify a positional.*$/, ''), { command });
  }
  const n = parsed.positionals.length;
  if (n < positionals.min) throw new UsageError(`missing ${positionals.names}`, { command });
  if (n > positionals.max) {
    throw new UsageError(`unexpected argument '${parsed.positionals[positionals.max]}'`, { command });
  }
  return parsed;
}
