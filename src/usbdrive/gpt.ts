// GPT and its protective MBR, encoded for a disk of 512-byte sectors. Pure:
// every GUID comes in from the caller; the same inputs give the same bytes.
//
// UEFI spec 2.10, 5.2.3 "Protective MBR": boot code in bytes 0-439 (ours is
// syslinux's gptmbr.bin, for BIOS PCs), one partition record of OSType 0xEE
// from LBA 1 over the rest of the disk, BootIndicator 0x00 ("must be ignored
// by UEFI implementations"; firmware that honours it is why it stays 0),
// signature 0xAA55 at 510.
// 5.3.2 "GPT Header": at LBA 1 and, as the backup, at the last LBA; CRC32
// over HeaderSize bytes with the CRC field zeroed; the entry array's CRC32 in
// the header. 5.3.3 "GPT Partition Entry Array": 128 entries of 128 bytes
// (16 KiB, 32 sectors) after the primary header and before the backup one.
// Table 5.8 "Defined GPT Partition Entry - Attributes": bit 2, Legacy BIOS
// Bootable, is what gptmbr.bin looks for.
import { crc32 } from '../disk/crc32';

export const SECTOR_SIZE = 512;
export const GPT_SIGNATURE = 'EFI PART';
export const GPT_REVISION = 0x00010000;
export const GPT_HEADER_SIZE = 92;
export const GPT_ENTRY_COUNT = 128;
export const GPT_ENTRY_SIZE = 128;
/** Sectors of the entry array: 128 * 128 / 512. */
export const GPT_ENTRY_SECTORS = (GPT_ENTRY_COUNT * GPT_ENTRY_SIZE) / SECTOR_SIZE;
/** LBA 0 (MBR) + LBA 1 (header) + the entry array. */
export const GPT_PRIMARY_SECTORS = 2 + GPT_ENTRY_SECTORS;
/** The entry array + the header, at the end of the disk. */
export const GPT_BACKUP_SECTORS = GPT_ENTRY_SECTORS + 1;
export const MBR_BOOT_CODE_SIZE = 440;
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
export const GPT_ATTRIBUTE_REQUIRED = 0n;
export const GPT_ATTRIBUTE_NO_BLOCK_IO = 1n;
export const GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE = 2n;
export const GPT_TYPE_ESP = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';

export class GptEncodeError extends Error {}

const GUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A GUID in its usual text form to the 16 bytes stored on disk (first three fields little-endian). */
export function encodeGuid(text: string): Buffer {
  if (!GUID_TEXT.test(text)) throw new GptEncodeError(`'${text}' is not a GUID`);
  const hex = text.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  const out = Buffer.alloc(16);
  out.writeUInt32LE(b.readUInt32BE(0), 0);
  out.writeUInt16LE(b.readUInt16BE(4), 4);
  out.writeUInt16LE(b.readUInt16BE(6), 6);
  b.copy(out, 8, 8, 16);
  return out;
}

/** 16 random bytes to a version-4 GUID's text (the caller supplies the randomness). */
export function guidFromRandom(bytes: Uint8Array): string {
  if (bytes.length < 16) throw new GptEncodeError('a GUID needs 16 random bytes');
  const b = Buffer.from(bytes.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** CHS of an LBA in the 255-head, 63-sector geometry, as MBR records store it; 0xFFFFFF when it does not fit. */
export function encodeChs(lba: number): [number, number, number] {
  const c = Math.floor(lba / (255 * 63));
  if (c > 1023) return [0xff, 0xff, 0xff];
  const h = Math.floor(lba / 63) % 255;
  const s = (lba % 63) + 1;
  return [h, s | ((c >> 2) & 0xc0), c & 0xff];
}

/** LBA 0: the boot code, one 0xEE record over the disk, 0xAA55. */
export function encodeProtectiveMbr(diskSectors: number, bootCode: Uint8Array = new Uint8Array(0)): Buffer {
  if (bootCode.length > MBR_BOOT_CODE_SIZE) throw new GptEncodeError(`MBR boot code is ${bootCode.length} bytes; at most ${MBR_BOOT_CODE_SIZE} fit`);
  const mbr = Buffer.alloc(SECTOR_SIZE);
  Buffer.from(bootCode).copy(mbr, 0);
  const rec = 446;
  mbr[rec] = 0x00; // BootIndicator
  // "StartingCHS: Set to 0x000200, corresponding to the Starting LBA field."
  mbr.set(encodeChs(1), rec + 1);
  mbr[rec + 4] = MBR_TYPE_GPT_PROTECTIVE;
  // "EndingCHS: the CHS address of the last logical block on the disk, 0xFFFFFF if it cannot be represented."
  mbr.set(encodeChs(diskSectors - 1), rec + 5);
  mbr.writeUInt32LE(1, rec + 8);
  // "SizeInLBA: the size of the disk minus one, 0xFFFFFFFF if too large."
  mbr.writeUInt32LE(Math.min(diskSectors - 1, 0xffffffff), rec + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  return mbr;
}

export interface GptPartitionSpec {
  typeGuid: string;
  uniqueGuid: string;
  firstLba: number;
  /** Inclusive, as the spec stores it. */
  lastLba: number;
  /** Attribute bit numbers to set, e.g. GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE. */
  attributes: readonly bigint[];
  /** Up to 36 UTF-16 code units. */
  name: string;
}

export function encodeGptEntries(partitions: readonly GptPartitionSpec[]): Buffer {
  if (partitions.length > GPT_ENTRY_COUNT) throw new GptEncodeError(`${partitions.length} partitions; a GPT of ${GPT_ENTRY_COUNT} entries holds fewer`);
  const out = Buffer.alloc(GPT_ENTRY_COUNT * GPT_ENTRY_SIZE);
  partitions.forEach((p, i) => {
    const at = i * GPT_ENTRY_SIZE;
    encodeGuid(p.typeGuid).copy(out, at);
    encodeGuid(p.uniqueGuid).copy(out, at + 16);
    out.writeBigUInt64LE(BigInt(p.firstLba), at + 32);
    out.writeBigUInt64LE(BigInt(p.lastLba), at + 40);
    let attributes = 0n;
    for (const bit of p.attributes) attributes |= 1n << bit;
    out.writeBigUInt64LE(attributes, at + 48);
    const name = Buffer.from(p.name, 'utf16le');
    if (name.length > 72) throw new GptEncodeError(`partition name '${p.name}' is longer than 36 UTF-16 code units`);
    name.copy(out, at + 56);
  });
  return out;
}

export interface GptHeaderFields {
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entriesCrc: number;
}

/** One header sector (512 bytes, zero after byte 92) with its CRC32. */
export function encodeGptHeader(f: GptHeaderFields): Buffer {
  const h = Buffer.alloc(SECTOR_SIZE);
  h.write(GPT_SIGNATURE, 0, 'latin1');
  h.writeUInt32LE(GPT_REVISION, 8);
  h.writeUInt32LE(GPT_HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(f.myLba), 24);
  h.writeBigUInt64LE(BigInt(f.alternateLba), 32);
  h.writeBigUInt64LE(BigInt(f.firstUsableLba), 40);
  h.writeBigUInt64LE(BigInt(f.lastUsableLba), 48);
  encodeGuid(f.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(f.entriesLba), 72);
  h.writeUInt32LE(GPT_ENTRY_COUNT, 80);
  h.writeUInt32LE(GPT_ENTRY_SIZE, 84);
  h.writeUInt32LE(f.entriesCrc >>> 0, 88);
  h.writeUInt32LE(crc32(h.subarray(0, GPT_HEADER_SIZE)), 16);
  return h;
}

export interface GptDiskSpec {
  diskSectors: number;
  diskGuid: string;
  partitions: readonly GptPartitionSpec[];
  /** Put into the protective MBR's first 440 bytes. */
  bootCode?: Uint8Array;
}

export interface EncodedGpt {
  /** LBA 0 to GPT_PRIMARY_SECTORS - 1: protective MBR, header, entries. */
  primary: Buffer;
  /** The last GPT_BACKUP_SECTORS sectors of the disk: entries, then the backup header. */
  backup: Buffer;
  /** Where `backup` starts, in sectors. */
  backupLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
}

export function encodeGpt(spec: GptDiskSpec): EncodedGpt {
  const { diskSectors } = spec;
  if (!Number.isSafeInteger(diskSectors) || diskSectors < GPT_PRIMARY_SECTORS + GPT_BACKUP_SECTORS + 1) {
    throw new GptEncodeError(`a disk of ${diskSectors} sectors cannot hold a GPT`);
  }
  const lastLba = diskSectors - 1;
  const firstUsableLba = GPT_PRIMARY_SECTORS;
  const lastUsableLba = lastLba - GPT_BACKUP_SECTORS;
  for (const p of spec.partitions) {
    if (!(p.firstLba >= firstUsableLba && p.lastLba <= lastUsableLba && p.firstLba <= p.lastLba)) {
      throw new GptEncodeError(`partition '${p.name}' (LBA ${p.firstLba}-${p.lastLba}) is outside the usable LBAs ${firstUsableLba}-${lastUsableLba}`);
    }
  }
  const entries = encodeGptEntries(spec.partitions);
  const entriesCrc = crc32(entries);
  const backupEntriesLba = lastLba - GPT_ENTRY_SECTORS;
  const common = { firstUsableLba, lastUsableLba, diskGuid: spec.diskGuid, entriesCrc };
  const primaryHeader = encodeGptHeader({ ...common, myLba: 1, alternateLba: lastLba, entriesLba: 2 });
  const backupHeader = encodeGptHeader({ ...common, myLba: lastLba, alternateLba: 1, entriesLba: backupEntriesLba });
  return {
    primary: Buffer.concat([encodeProtectiveMbr(diskSectors, spec.bootCode), primaryHeader, entries]),
    backup: Buffer.concat([entries, backupHeader]),
    backupLba: backupEntriesLba,
    firstUsableLba,
    lastUsableLba,
  };
}
