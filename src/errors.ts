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

const ERRNO_WORDS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'it is a directory',
  EEXIST: 'it exists already',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EBUSY: 'it is in use',
};

/** A system error in words a person can act on: "permission denied (EACCES): run as root". */
export function describeErrno(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  const words = ERRNO_WORDS[code] ?? err.message.replace(/^[A-Z]+: /, '').split(',')[0]!;
  const fix = code === 'EACCES' ? ': run as root, or choose a path you may write' : '';
  return `${words} (${code})${fix}`;
}
