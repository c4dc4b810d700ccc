// The secret file: exactly 32 raw bytes, owned by root, mode 0600.
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import { makeDirectory } from '../make-dir';
import { SECRET_SIZE } from './keys';

export function generateSecret(): Buffer {
  return randomBytes(SECRET_SIZE);
}

/**
 * Reads the shared secret. Refuses a file of the wrong size, and one that
 * group or others can read (anyone who reads it can boot the laptop).
 */
export async function readSecretFile(path: string): Promise<Buffer> {
  let handle;
  try {
    handle = await fs.open(path, constants.O_RDONLY);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') {
      throw new StiefelError('E_SECRET_MISSING', `the secret file ${path} does not exist: run 'stiefelctl init' (or copy it from the other machine)`, { cause: err });
    }
    if (code === 'EACCES') {
      throw new StiefelError('E_SECRET_ACCESS', `cannot read the secret file ${path}: permission denied (run as root)`, { cause: err });
    }
    throw new StiefelError('E_SECRET_READ', `cannot read the secret file ${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new StiefelError('E_SECRET_INVALID', `the secret file ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new StiefelError(
        'E_SECRET_MODE',
        `the secret file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): run 'chmod 600 ${path}'`,
      );
    }
    if (st.size !== SECRET_SIZE) {
      throw new StiefelError(
        'E_SECRET_INVALID',
        `the secret file ${path} has ${st.size} bytes, not ${SECRET_SIZE}: run 'stiefelctl init --force' to make a new one`,
      );
    }
    const buf = Buffer.alloc(SECRET_SIZE);
    const { bytesRead } = await handle.read(buf, 0, SECRET_SIZE, 0);
    if (bytesRead !== SECRET_SIZE) throw new StiefelError('E_SECRET_INVALID', `the secret file ${path} changed while it was read`);
    return buf;
  } finally {
    await handle.close();
  }
}

/**
 * Writes a secret with mode 0600, atomically (temp file + rename), never
 * replacing an existing one unless `force`.
 */
export async function writeSecretFile(path: string, secret: Uint8Array, options: { force?: boolean } = {}): Promise<void> {
  if (secret.length !== SECRET_SIZE) throw new RangeError(`a secret must be ${SECRET_SIZE} bytes`);
  if (!options.force) {
    try {
      await fs.lstat(path);
      throw new StiefelError('E_SECRET_EXISTS', `the secret file ${path} already exists; keep it, or pass --force to replace it (then copy it to every client again)`);
    } catch (err) {
      if (err instanceof StiefelError) throw err;
      if (errnoCode(err) !== 'ENOENT') throw new StiefelError('E_SECRET_WRITE', `cannot check ${path}: ${(err as Error).message}`, { cause: err });
    }
  }
  await makeDirectory(dirname(path), { what: "the secret's directory", mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      await handle.writeFile(secret);
      await handle.chmod(0o600);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, path);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw new StiefelError('E_SECRET_WRITE', `cannot write the secret file ${path}: ${(err as Error).message}`, { cause: err });
  }
}
