import { open, readFile, stat } from 'node:fs/promises';

/** Up to `length` bytes of `file` from `offset` (fewer at its end). */
export async function readRange(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The size of a file, or of a block device (from sysfs: stat says 0 for those). */
export async function deviceSize(path: string): Promise<number> {
  const st = await stat(path);
  if (!st.isBlockDevice()) return st.size;
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  return Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim()) * 512;
}
