// The cpio "newc" (SVR4, no CRC) format, as the kernel unpacks an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst):
//
//   header  "070701" + 13 fields of 8 ASCII hex digits:
//           ino mode uid gid nlink mtime filesize devmajor devminor
//           rdevmajor rdevminor namesize check
//   name    namesize bytes including the trailing NUL, padded to 4 bytes
//           (counting from the start of the header)
//   data    filesize bytes, padded to 4 bytes
//   ...     ending with an entry named "TRAILER!!!".
//
// Pure: no files, clocks or randomness. Entries are sorted by path (bytewise,
// so every directory precedes its contents) and given inode numbers in that
// order; owners are root and every time is the one `mtime` given, so the same
// entries always give the same bytes.

export const NEWC_MAGIC = '070701';
export const NEWC_HEADER_SIZE = 110;
export const NEWC_TRAILER = 'TRAILER!!!';

const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char' | 'block'; path: string; major: number; minor: number; mode?: number };

export interface NewcOptions {
  /** Modification time of every entry, seconds since the epoch (SOURCE_DATE_EPOCH). */
  mtime?: number;
}

export class CpioError extends Error {}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new CpioError(`cpio ${field} ${value} does not fit the newc format`);
  }
  return value.toString(16).padStart(8, '0');
}

/** Normalises `/a//b/` to `a/b` and refuses paths that could escape the archive root. */
export function normalizeCpioPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new CpioError(`cpio path '${path}' names the archive root`);
  if (parts.includes('..')) throw new CpioError(`cpio path '${path}' contains '..'`);
  if (path.includes('\0')) throw new CpioError('cpio path contains a NUL byte');
  return parts.join('/');
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
}): string {
  return (
    NEWC_MAGIC +
    hex8(fields.ino, 'inode') +
    hex8(fields.mode, 'mode') +
    hex8(0, 'uid') +
    hex8(0, 'gid') +
    hex8(fields.nlink, 'nlink') +
    hex8(fields.mtime, 'mtime') +
    hex8(fields.filesize, 'file size') +
    hex8(0, 'devmajor') +
    hex8(0, 'devminor') +
    hex8(fields.rdevmajor, 'rdevmajor') +
    hex8(fields.rdevminor, 'rdevminor') +
    hex8(fields.namesize, 'name size') +
    hex8(0, 'check')
  );
}

function record(name: string, fields: Omit<Parameters<typeof header>[0], 'namesize'>, data?: Uint8Array): Buffer[] {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const head = Buffer.from(header({ ...fields, namesize: nameBytes.length }), 'ascii');
  const out: Buffer[] = [head, nameBytes, Buffer.alloc(pad4(NEWC_HEADER_SIZE + nameBytes.length))];
  if (data && data.length > 0) out.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.length)));
  return out;
}

/** Sorted, validated copies of the entries; throws on duplicates. */
export function sortCpioEntries(entries: readonly CpioEntry[]): CpioEntry[] {
  const normalized = entries.map((e) => ({ ...e, path: normalizeCpioPath(e.path) }));
  normalized.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  for (let i = 1; i < normalized.length; i++) {
    if (normalized[i]!.path === normalized[i - 1]!.path) {
      throw new CpioError(`cpio path '${normalized[i]!.path}' is given twice`);
    }
  }
  return normalized;
}

/** The archive as a sequence of buffers (no copy of file data), trailer included. */
export function* newcChunks(entries: readonly CpioEntry[], options: NewcOptions = {}): Generator<Buffer> {
  const mtime = options.mtime ?? 0;
  let ino = 0;
  for (const e of sortCpioEntries(entries)) {
    ino += 1;
    const base = { ino, mtime, rdevmajor: 0, rdevminor: 0 };
    switch (e.type) {
      case 'dir':
        yield* record(e.path, { ...base, mode: S_IFDIR | ((e.mode ?? 0o755) & ~S_IFMT), nlink: 2, filesize: 0 });
        break;
      case 'file':
        yield* record(
          e.path,
          { ...base, mode: S_IFREG | ((e.mode ?? 0o644) & ~S_IFMT), nlink: 1, filesize: e.data.length },
          e.data,
        );
        break;
      case 'symlink': {
        const target = Buffer.from(e.target, 'utf8');
        yield* record(e.path, { ...base, mode: S_IFLNK | 0o777, nlink: 1, filesize: target.length }, target);
        break;
      }
      case 'char':
      case 'block':
        yield* record(e.path, {
          ...base,
          mode: (e.type === 'char' ? S_IFCHR : S_IFBLK) | ((e.mode ?? 0o600) & ~S_IFMT),
          nlink: 1,
          filesize: 0,
          rdevmajor: e.major,
          rdevminor: e.minor,
        });
        break;
    }
  }
  yield* record(NEWC_TRAILER, { ino: 0, mode: 0, nlink: 1, mtime: 0, filesize: 0, rdevmajor: 0, rdevminor: 0 });
}

export function encodeNewc(entries: readonly CpioEntry[], options: NewcOptions = {}): Buffer {
  return Buffer.concat([...newcChunks(entries, options)]);
}

export interface DecodedCpioEntry {
  path: string;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevmajor: number;
  rdevminor: number;
  data: Buffer;
}

/**
 * Reads a newc archive up to its trailer. Several archives may be
 * concatenated (as initrds are); `end` tells where this one stopped, after
 * the trailer's padding.
 */
export function decodeNewc(buf: Uint8Array, start = 0): { entries: DecodedCpioEntry[]; end: number } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const entries: DecodedCpioEntry[] = [];
  let off = start;
  for (;;) {
    if (off + NEWC_HEADER_SIZE > b.length) throw new CpioError(`cpio archive truncated at byte ${off}`);
    const head = b.toString('latin1', off, off + NEWC_HEADER_SIZE);
    if (!head.startsWith(NEWC_MAGIC)) throw new CpioError(`no newc header at byte ${off}`);
    const field = (i: number): number => {
      const text = head.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new CpioError(`bad cpio header field at byte ${off}`);
      return parseInt(text, 16);
    };
    const namesize = field(11);
    const filesize = field(6);
    if (namesize < 1) throw new CpioError(`cpio entry at byte ${off} has an empty name`);
    const nameStart = off + NEWC_HEADER_SIZE;
    const dataStart = nameStart + namesize + pad4(NEWC_HEADER_SIZE + namesize);
    const dataEnd = dataStart + filesize;
    if (dataEnd > b.length) throw new CpioError(`cpio archive truncated in the entry at byte ${off}`);
    if (b[nameStart + namesize - 1] !== 0) throw new CpioError(`cpio name at byte ${off} is not NUL-terminated`);
    const path = b.toString('utf8', nameStart, nameStart + namesize - 1);
    off = dataEnd + pad4(filesize);
    if (path === NEWC_TRAILER) return { entries, end: Math.min(off, b.length) };
    entries.push({
      path,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      gid: field(3),
      nlink: field(4),
      mtime: field(5),
      rdevmajor: field(9),
      rdevminor: field(10),
      data: b.subarray(dataStart, dataEnd),
    });
  }
}

/**
 * Zero bytes to put between an initrd of `size` bytes and an appended cpio:
 * the kernel skips zeros between archives but wants each header 4-aligned
 * (init/initramfs.c, "broken padding").
 */
export function initrdPadding(size: number): Buffer {
  return Buffer.alloc((4 - (size % 4)) % 4);
}
