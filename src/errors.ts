// One error base class for everything stiefelsystem reports on purpose.
// The message of a StiefelError is one line a user can act on; the CLI prints
// it without a stack trace. Anything that is not a StiefelError is a bug and
// is printed with its stack (see src/cli/main.ts, the one place that maps
// errors to exit codes).

export class StiefelError extends Error {
  /** Stable, greppable identifier, e.g. `E_NBD_OPEN`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The user's command line was wrong: exit code 2, with a pointer to --help. */
export class UsageError extends StiefelError {
  readonly command: string | undefined;

  constructor(message: string, options?: { command?: string; cause?: unknown }) {
    super('E_USAGE', message, options);
    this.command = options?.command;
  }
}

/** Narrow an unknown thrown value to a Node system error with an errno code. */
export function isErrnoException(err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string';
}

export function errnoCode(err: unknown): string | undefined {
  return isErrnoException(err) ? err.code : undefined;
}
