// Recognises what a partition holds from its first 68 KiB, the way blkid's
// superblock magics do: ext2/3/4, XFS, Btrfs, FAT, LUKS, LVM2 physical
// volume, swap. Pure; never throws.
//   ext*:  superblock at 1024, s_magic 0xEF53 at +0x38, UUID at +0x68, label at +0x78,
//          journal when s_feature_compat has HAS_JOURNAL (0x4)
//   XFS:   "XFSB" at 0, UUID at 32, label at 108
//   Btrfs: superblock at 64 KiB, "_BHRfS_M" at +0x40, fsid at +0x20, label at +0x12b
//   FAT:   55 AA at 510, "FAT12/16" at 54 or "FAT32" at 82; volume id at 39 / 67
//   LUKS:  "LUKS\xba\xbe" at 0 (v1 UUID at 168; v2 at 168 too)
//   LVM2:  "LABELONE" at sector 0..3, "LVM2 001" at +24
//   swap:  "SWAPSPACE2" at 4086 (4 KiB pages)
import { decodeGuid } from './partition-table';

export type FsKind = 'ext' | 'xfs' | 'btrfs' | 'vfat' | 'luks' | 'lvm2' | 'swap' | 'unknown';

export interface FsProbe {
  kind: FsKind;
  uuid: string | null;
  label: string | null;
  /** ext: whether it has a journal (mounted with noload). */
  journal?: boolean;
}

export const PROBE_BYTES = 68 * 1024;

const ascii = (b: Uint8Array, at: number, len: number): string => Buffer.from(b.subarray(at, at + len)).toString('latin1');
const cstr = (b: Uint8Array, at: number, len: number): string | null => {
  const s = Buffer.from(b.subarray(at, at + len)).toString('utf8');
  const z = s.indexOf('\0');
  const t = (z >= 0 ? s.slice(0, z) : s).trim();
  return t || null;
};
const hexUuid = (b: Uint8Array, at: number): string => {
  const h = Buffer.from(b.subarray(at, at + 16)).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

export function probeFilesystem(b: Uint8Array): FsProbe {
  if (b.length >= 6 && ascii(b, 0, 4) === 'LUKS' && b[4] === 0xba && b[5] === 0xbe) {
    return { kind: 'luks', uuid: b.length >= 208 ? cstr(b, 168, 40) : null, label: b.length >= 0x1b8 && b[7] === 2 ? cstr(b, 24, 48) : null };
  }
  if (b.length >= 1024 + 0x88 && b[1024 + 0x38] === 0x53 && b[1024 + 0x39] === 0xef) {
    const compat = b[1024 + 0x5c]!;
    return { kind: 'ext', uuid: hexUuid(b, 1024 + 0x68), label: cstr(b, 1024 + 0x78, 16), journal: (compat & 0x4) !== 0 };
  }
  if (b.length >= 120 && ascii(b, 0, 4) === 'XFSB') return { kind: 'xfs', uuid: hexUuid(b, 32), label: cstr(b, 108, 12) };
  if (b.length >= 0x10000 + 0x22b && ascii(b, 0x10040, 8) === '_BHRfS_M') return { kind: 'btrfs', uuid: hexUuid(b, 0x10020), label: cstr(b, 0x1012b, 256) };
  for (let s = 0; s < 4; s++) {
    const at = s * 512;
    if (b.length >= at + 32 && ascii(b, at, 8) === 'LABELONE' && ascii(b, at + 24, 8) === 'LVM2 001') {
      const pvOff = at + (b[at + 20]! | (b[at + 21]! << 8));
      const id = b.length >= pvOff + 32 ? ascii(b, pvOff, 32) : null;
      return { kind: 'lvm2', uuid: id, label: null };
    }
  }
  if (b.length >= 4096 && ascii(b, 4086, 10) === 'SWAPSPACE2') return { kind: 'swap', uuid: b.length >= 1024 + 0x1c ? hexUuid(b, 1024 + 0xc) : null, label: null };
  if (b.length >= 512 && b[510] === 0x55 && b[511] === 0xaa) {
    const volId = (at: number) => {
      const v = (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
      const h = v.toString(16).toUpperCase().padStart(8, '0');
      return `${h.slice(0, 4)}-${h.slice(4)}`;
    };
    if (ascii(b, 82, 5) === 'FAT32') return { kind: 'vfat', uuid: volId(67), label: cstr(b, 71, 11) };
    if (ascii(b, 54, 3) === 'FAT') return { kind: 'vfat', uuid: volId(39), label: cstr(b, 43, 11) };
  }
  return { kind: 'unknown', uuid: null, label: null };
}

export { decodeGuid };
