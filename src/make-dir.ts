// Making a directory and its missing parents, one at a time. Node's recursive
// mkdir loops forever on some paths under /proc; walking up to the first
// existing ancestor and creating downward also lets every failure name the
// directory it is about and the fix.
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { describeErrno, isErrnoException, StiefelError } from './errors';

/** Makes `dir` (and its missing parents) with `mode`; `what` names it in errors ("the config's directory"). */
export async function makeDirectory(dir: string, options: { what: string; mode?: number }): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    const st = await stat(d).catch((err: unknown) => (isErrnoException(err) && err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    if (st) {
      if (!st.isDirectory()) throw new StiefelError('E_MKDIR', `cannot make ${options.what} ${dir}: ${d} is not a directory`);
      break;
    }
    if (dirname(d) === d) break;
    missing.unshift(d);
  }
  for (const d of missing) {
    try {
      await mkdir(d, { mode: options.mode });
    } catch (err) {
      if (isErrnoException(err) && err.code === 'EEXIST') continue;
      // EPERM, ENOENT, EROFS: a place (/sys, /proc, a read-only mount) where no directory can be made.
      const fix = isErrnoException(err) && ['EPERM', 'ENOENT', 'EROFS'].includes(err.code ?? '') ? ': choose another path' : '';
      throw new StiefelError('E_MKDIR', `cannot make ${options.what} ${dir}: ${isErrnoException(err) ? describeErrno(err) : String(err)}${fix}`, { cause: err });
    }
  }
}
