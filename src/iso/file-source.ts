// An ISO image in a file or on a block device, as an IsoSource.
import { open } from 'node:fs/promises';
import { deviceSize } from '../disk/read-range';
import { describeErrno, isErrnoException, StiefelError } from '../errors';
import type { IsoSource } from './reader';

export interface OpenedIsoSource extends IsoSource {
  close(): Promise<void>;
}

/** Opens `path` read-only; `name` is how messages call it (the path the user typed). */
export async function openIsoFile(path: string, name = path): Promise<OpenedIsoSource> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw new StiefelError('E_ISO_OPEN', `cannot open ${name}: ${isErrnoException(err) ? describeErrno(err) : String(err)}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new StiefelError('E_ISO_NOT_FILE', `${name} is a directory, not an ISO image file`);
    if (!st.isFile() && !st.isBlockDevice()) throw new StiefelError('E_ISO_NOT_FILE', `${name} is not a regular file or a block device`);
    const size = st.isBlockDevice() ? await deviceSize(path) : st.size;
    const handle = fh;
    return {
      name,
      size,
      async read(offset, length) {
        const buf = Buffer.alloc(length);
        let done = 0;
        while (done < length) {
          const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return buf.subarray(0, done);
      },
      close: () => handle.close(),
    };
  } catch (err) {
    await fh.close();
    if (isErrnoException(err) && !(err instanceof StiefelError)) {
      throw new StiefelError('E_ISO_OPEN', `cannot read ${name}: ${describeErrno(err)}`, { cause: err });
    }
    throw err;
  }
}
