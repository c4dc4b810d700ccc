// ISO 9660 (ECMA-119, 4th edition) volume descriptors and directory records,
// and Joliet's names. Pure: every decoder takes bytes and returns a value or
// throws one IsoFormatError naming the field that is wrong; nothing here reads
// a file. Field offsets are ECMA-119's byte positions minus one (the standard
// counts from 1).
import { StiefelError } from '../errors';

/** ECMA-119 6.1.2: the logical sector size of every CD-ROM. */
export const ISO_SECTOR_SIZE = 2048;
/** ECMA-119 6.2.1: sectors 0-15 are the system area; descriptors start at 16. */
export const ISO_FIRST_DESCRIPTOR_SECTOR = 16;
export const ISO_STANDARD_IDENTIFIER = 'CD001';

/** ECMA-119 8.1.1: volume descriptor types. */
export const VD_BOOT_RECORD = 0;
export const VD_PRIMARY = 1;
export const VD_SUPPLEMENTARY = 2;
export const VD_PARTITION = 3;
export const VD_TERMINATOR = 255;

/** ECMA-119 9.1.6: file flags. */
export const FILE_FLAG_HIDDEN = 0x01;
export const FILE_FLAG_DIRECTORY = 0x02;
export const FILE_FLAG_ASSOCIATED = 0x04;
export const FILE_FLAG_MULTI_EXTENT = 0x80;

/** Joliet's escape sequences for UCS-2 levels 1, 2 and 3 (in the SVD's escape-sequence field). */
export const JOLIET_ESCAPES = ['%/@', '%/C', '%/E'];

/** A malformed image: the one error every decoder throws, with what was wrong. */
export class IsoFormatError extends StiefelError {
  constructor(message: string, code = 'E_ISO_CORRUPT') {
    super(code, message);
  }
}

/**
 * Both-endian fields (ECMA-119 7.2.3, 7.3.3): the little-endian half is used
 * and the big-endian half ignored, as Linux (isonum_733) and GRUB do, so that
 * an image the kernel mounts is not refused here over a sloppy mastering tool.
 */
const bothEndian32 = (b: Buffer, at: number): number => b.readUInt32LE(at);
const bothEndian16 = (b: Buffer, at: number): number => b.readUInt16LE(at);

const trimA = (b: Buffer, from: number, to: number): string => b.toString('latin1', from, to).replace(/[\s\0]+$/, '');

/** UCS-2 big-endian (Joliet), without its trailing blanks. */
export function decodeUcs2(b: Buffer): string {
  let s = '';
  for (let i = 0; i + 1 < b.length; i += 2) s += String.fromCharCode(b.readUInt16BE(i));
  return s.replace(/[\s\0]+$/, '');
}

/** ECMA-119 8.4.26.1: "YYYYMMDDHHMMSScc" + offset; all zeros or blanks means not specified. */
function decodeLongDate(b: Buffer, at: number): string | null {
  const digits = b.toString('latin1', at, at + 16);
  if (!/^\d{16}$/.test(digits) || /^0+$/.test(digits)) return null;
  const tz = b.readInt8(at + 16) * 15;
  const sign = tz < 0 ? '-' : '+';
  const hh = String(Math.floor(Math.abs(tz) / 60)).padStart(2, '0');
  const mm = String(Math.abs(tz) % 60).padStart(2, '0');
  const [y, mo, d, h, mi, s, cs] = [digits.slice(0, 4), digits.slice(4, 6), digits.slice(6, 8), digits.slice(8, 10), digits.slice(10, 12), digits.slice(12, 14), digits.slice(14, 16)];
  return `${y}-${mo}-${d}T${h}:${mi}:${s}.${cs}${sign}${hh}:${mm}`;
}

export interface VolumeDescriptorHeader {
  type: number;
  version: number;
}

/** ECMA-119 8.1: every descriptor starts with its type, "CD001" and version 1. Null when the sector holds none. */
export function decodeDescriptorHeader(sector: Buffer): VolumeDescriptorHeader | null {
  if (sector.length < 7 || sector.toString('latin1', 1, 6) !== ISO_STANDARD_IDENTIFIER) return null;
  return { type: sector[0]!, version: sector[6]! };
}

export interface DirectoryRecord {
  /** LEN_DR: the whole record's length in bytes. */
  length: number;
  extendedAttributeLength: number;
  /** Location of extent, in logical blocks. */
  extent: number;
  dataLength: number;
  flags: number;
  /** The raw file identifier: ";1" versions and trailing dots still there; 0x00 is ".", 0x01 is "..". */
  identifier: Buffer;
  /** The system use area (Rock Ridge lives here). */
  systemUse: Buffer;
  /** ECMA-119 9.1.5, seconds since the epoch, when given. */
  recorded: number | null;
}

/** ECMA-119 9.1: one directory record at `at` in `b`; the record must lie whole inside `b`. */
export function decodeDirectoryRecord(b: Buffer, at: number): DirectoryRecord {
  const length = b[at]!;
  if (length < 34) throw new IsoFormatError(`a directory record is ${length} bytes long, shorter than the 34 ECMA-119 requires`);
  if (at + length > b.length) throw new IsoFormatError(`a directory record of ${length} bytes runs past the end of its sector`);
  const lenFi = b[at + 32]!;
  if (33 + lenFi > length) throw new IsoFormatError(`a file identifier of ${lenFi} bytes does not fit its ${length}-byte directory record`);
  // 9.1.12: a padding byte follows an identifier of even length.
  const suStart = 33 + lenFi + (lenFi % 2 === 0 ? 1 : 0);
  const y = b[at + 18]!;
  const date = y === 0 && b[at + 19] === 0 ? null : Date.UTC(1900 + y, b[at + 19]! - 1, b[at + 20]!, b[at + 21]!, b[at + 22]!, b[at + 23]!) / 1000 - b.readInt8(at + 24) * 15 * 60;
  return {
    length,
    extendedAttributeLength: b[at + 1]!,
    extent: bothEndian32(b, at + 2),
    dataLength: bothEndian32(b, at + 10),
    flags: b[at + 25]!,
    identifier: b.subarray(at + 33, at + 33 + lenFi),
    systemUse: suStart < length ? b.subarray(at + suStart, at + length) : Buffer.alloc(0),
    recorded: Number.isFinite(date) ? date : null,
  };
}

/**
 * ECMA-119 6.8.1.1: a directory's records, in order. A record never crosses a
 * sector boundary: a zero length byte means the rest of the sector is unused.
 */
export function decodeDirectoryRecords(data: Buffer, options: { maxRecords: number }): DirectoryRecord[] {
  const out: DirectoryRecord[] = [];
  let at = 0;
  while (at < data.length) {
    const len = data[at]!;
    if (len === 0) {
      at = (Math.floor(at / ISO_SECTOR_SIZE) + 1) * ISO_SECTOR_SIZE;
      continue;
    }
    const sectorEnd = Math.min(data.length, (Math.floor(at / ISO_SECTOR_SIZE) + 1) * ISO_SECTOR_SIZE);
    const record = decodeDirectoryRecord(data.subarray(0, sectorEnd), at);
    out.push(record);
    if (out.length > options.maxRecords) throw new IsoFormatError(`a directory holds more than ${options.maxRecords} records`);
    at += len;
  }
  return out;
}

/** The name as ECMA-119 spells it, without its ";1" version and the dot of an empty extension. */
export function isoName(identifier: Buffer, joliet: boolean): string {
  const raw = joliet ? decodeUcs2(identifier) : identifier.toString('latin1');
  return raw.replace(/;\d*$/, '').replace(/\.$/, '');
}

export interface VolumeDescriptor {
  type: typeof VD_PRIMARY | typeof VD_SUPPLEMENTARY;
  /** A supplementary descriptor with a Joliet escape sequence: names are UCS-2. */
  joliet: boolean;
  systemId: string;
  volumeId: string;
  /** Volume space size, in logical blocks. */
  volumeBlocks: number;
  blockSize: number;
  publisherId: string;
  preparerId: string;
  applicationId: string;
  created: string | null;
  modified: string | null;
  /** The raw modification date digits (GRUB's iso9660 UUID comes from them). */
  modifiedDigits: string;
  root: DirectoryRecord;
}

/** ECMA-119 8.4 (primary) and 8.5 (supplementary, Joliet). */
export function decodeVolumeDescriptor(sector: Buffer): VolumeDescriptor {
  if (sector.length < ISO_SECTOR_SIZE) throw new IsoFormatError('a volume descriptor is cut short');
  const header = decodeDescriptorHeader(sector);
  if (!header || (header.type !== VD_PRIMARY && header.type !== VD_SUPPLEMENTARY)) throw new IsoFormatError('not a primary or supplementary volume descriptor');
  const type = header.type as typeof VD_PRIMARY | typeof VD_SUPPLEMENTARY;
  const escapes = sector.toString('latin1', 88, 120);
  const joliet = type === VD_SUPPLEMENTARY && JOLIET_ESCAPES.some((e) => escapes.startsWith(e));
  const text = (from: number, to: number) => (joliet ? decodeUcs2(sector.subarray(from, to)) : trimA(sector, from, to));
  const blockSize = bothEndian16(sector, 128);
  // 6.1.2: 2^(n+9), and never larger than the sector.
  if (![512, 1024, 2048].includes(blockSize)) throw new IsoFormatError(`the logical block size is ${blockSize}, not 512, 1024 or 2048`);
  if (sector[156] !== 34) throw new IsoFormatError(`the root directory record is ${sector[156]} bytes long, not 34`);
  const root = decodeDirectoryRecord(sector.subarray(156, 190), 0);
  if (!(root.flags & FILE_FLAG_DIRECTORY)) throw new IsoFormatError('the root directory record is not a directory');
  return {
    type,
    joliet,
    systemId: text(8, 40),
    volumeId: text(40, 72),
    volumeBlocks: bothEndian32(sector, 80),
    blockSize,
    publisherId: text(318, 446),
    preparerId: text(446, 574),
    applicationId: text(574, 702),
    created: decodeLongDate(sector, 813),
    modified: decodeLongDate(sector, 830),
    modifiedDigits: sector.toString('latin1', 830, 846),
    root,
  };
}

/**
 * GRUB's UUID of an ISO 9660 file system (grub-core/fs/iso9660.c,
 * grub_iso9660_uuid): the modification date's digits as
 * YYYY-MM-DD-HH-MM-SS-cc, what `search --fs-uuid` on an ISO compares with.
 */
export function grubIsoUuid(modifiedDigits: string): string | null {
  if (!/^\d{16}$/.test(modifiedDigits) || /^0+$/.test(modifiedDigits)) return null;
  const d = modifiedDigits;
  return `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}-${d.slice(8, 10)}-${d.slice(10, 12)}-${d.slice(12, 14)}-${d.slice(14, 16)}`;
}
