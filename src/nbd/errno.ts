// The one place that maps errors to NBD error values ("Error values").
import { errnoCode } from '../errors';
import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_ENOTSUP, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN } from './protocol';

/** An error a backend reports on purpose, with the NBD error value to send. */
export class BackendError extends Error {
  readonly nbdError: number;
  constructor(nbdError: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BackendError';
    this.nbdError = nbdError;
  }
}

/** NBD error value for anything a backend threw. */
export function nbdErrorOf(err: unknown): number {
  if (err instanceof BackendError) return err.nbdError;
  switch (errnoCode(err)) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NBD_EPERM;
    // "It also SHOULD map the EDQUOT and EFBIG errors to NBD_ENOSPC."
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EINVAL':
      return NBD_EINVAL;
    case 'ENOMEM':
      return NBD_ENOMEM;
    case 'EOVERFLOW':
      return NBD_EOVERFLOW;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NBD_ENOTSUP;
    case 'ESHUTDOWN':
      return NBD_ESHUTDOWN;
    default:
      return NBD_EIO;
  }
}

export function nbdErrorName(value: number): string {
  const names: Record<number, string> = {
    [NBD_EPERM]: 'EPERM',
    [NBD_EIO]: 'EIO',
    [NBD_ENOMEM]: 'ENOMEM',
    [NBD_EINVAL]: 'EINVAL',
    [NBD_ENOSPC]: 'ENOSPC',
    [NBD_EOVERFLOW]: 'EOVERFLOW',
    [NBD_ENOTSUP]: 'ENOTSUP',
    [NBD_ESHUTDOWN]: 'ESHUTDOWN',
  };
  return names[value] ?? `error ${value}`;
}
