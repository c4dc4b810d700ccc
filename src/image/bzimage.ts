// The x86 Linux boot protocol header of a bzImage
// (Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header"). Pure.
//
//   0x1FE  boot_flag       0xAA55
//   0x202  header          "HdrS" (protocol 2.00 and later)
//   0x206  version         boot protocol version, e.g. 0x020F
//   0x20E  kernel_version  "If set to nonzero, contains a pointer to a
//                          NUL-terminated human-readable kernel version
//                          number string, less 0x200."

export const BZIMAGE_BOOT_FLAG = 0xaa55;
export const BZIMAGE_HEADER_MAGIC = 'HdrS';

export class BzImageError extends Error {}

export interface BzImageInfo {
  /** Boot protocol version as `major.minor`, e.g. `2.15`. */
  protocol: string;
  /** The whole version string, e.g. `6.1.0-56-amd64 (debian-kernel@...) #1 SMP ...`. */
  versionString: string;
  /** Its first word: the release `uname -r` prints and /lib/modules is named after. */
  release: string;
}

/** Reads the boot header; `buf` needs only the first 64 KiB of the file. */
export function readBzImageInfo(buf: Uint8Array): BzImageInfo {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 0x210) throw new BzImageError('too short for an x86 boot header');
  if (b.readUInt16LE(0x1fe) !== BZIMAGE_BOOT_FLAG || b.toString('latin1', 0x202, 0x206) !== BZIMAGE_HEADER_MAGIC) {
    throw new BzImageError('no x86 boot header (boot flag 0xAA55 and "HdrS" magic)');
  }
  const version = b.readUInt16LE(0x206);
  const pointer = b.readUInt16LE(0x20e);
  if (pointer === 0) throw new BzImageError('the boot header has no kernel version string');
  const start = pointer + 0x200;
  if (start >= b.length) throw new BzImageError('the kernel version string lies beyond the bytes read');
  const end = b.indexOf(0, start);
  if (end < 0) throw new BzImageError('the kernel version string is not NUL-terminated');
  const versionString = b.toString('latin1', start, end);
  const release = versionString.split(' ')[0] ?? '';
  if (!/^[0-9][0-9A-Za-z._+~-]*$/.test(release)) {
    throw new BzImageError(`the kernel version string '${versionString.slice(0, 60)}' does not start with a release`);
  }
  return { protocol: `${version >> 8}.${version & 0xff}`, versionString, release };
}
