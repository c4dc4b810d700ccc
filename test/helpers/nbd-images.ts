// Test images with data and holes, and checksums.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';

const MiB = 1024 * 1024;

/** A sparse image: pseudo-random data in a few places, holes elsewhere. Deterministic. */
export function makeSparseImage(path: string, sizeMiB: number, seed = 1): void {
  writeFileSync(path, '');
  truncateSync(path, sizeMiB * MiB);
  const fd = openSync(path, 'r+');
  let x = seed >>> 0 || 1;
  const rand = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  for (let mib = 0; mib < sizeMiB; mib++) {
    if (mib % 4 === 3) continue; // holes
    const len = mib % 4 === 1 ? 4096 * (1 + (rand() % 16)) : MiB;
    const buf = Buffer.allocUnsafe(len);
    for (let i = 0; i < len; i += 4) buf.writeUInt32LE(rand(), i);
    writeSync(fd, buf, 0, len, mib * MiB);
  }
  closeSync(fd);
}

export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * A file of `extents` extents, alternately data (pseudo-random bytes) and
 * holes of equal size, `sizeMiB` MiB in all: the kind of file block status
 * has most to say about.
 */
export function makeExtentImage(path: string, sizeMiB: number, extents: number): void {
  const size = sizeMiB * MiB;
  const step = Math.floor(size / extents);
  writeFileSync(path, '');
  truncateSync(path, size);
  const fd = openSync(path, 'r+');
  const data = Buffer.alloc(step, 0xa5);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  for (let off = 0; off + 2 * step <= size; off += 2 * step) writeSync(fd, data, 0, step, off);
  closeSync(fd);
}
