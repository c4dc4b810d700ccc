// GPT and MBR partition tables, decoded from bytes the caller reads (so the
// same code serves image files and block devices, and is fuzzed in unit
// tests). Pure; never throws: problems become `problems` strings.
//
// MBR: 4 entries of 16 bytes at 0x1BE, signature 0x55 0xAA at 0x1FE; type
// 0x05/0x0F/0x85 is an extended partition whose chain of EBRs holds the
// logical partitions (numbered from 5); type 0xEE is GPT's protective MBR.
// GPT (UEFI spec, "GUID Partition Table Disk Layout"): header at LBA 1
// ("EFI PART"), CRC32 over HeaderSize bytes with the CRC field zeroed; the
// entry array at PartitionEntryLBA, NumberOfPartitionEntries entries of
// SizeOfPartitionEntry bytes, its CRC32 in the header; the backup header at
// the last LBA.
import { crc32 } from './crc32';

export interface Partition {
  /** Linux numbering: GPT slot + 1; MBR 1-4 primary, 5+ logical. */
  number: number;
  /** Byte offset and size on the disk. */
  offset: number;
  size: number;
  /** GPT type GUID (lowercase) or MBR type as "0x83". */
  type: string;
  /** GPT partition GUID (lowercase); MBR: "DISKSIG-NN" as Linux's PARTUUID. */
  uuid: string | null;
  name: string | null;
}

export interface PartitionTable {
  scheme: 'gpt' | 'mbr';
  sectorSize: number;
  partitions: Partition[];
  problems: string[];
}

export const GPT_SIGNATURE = 'EFI PART';
export const GPT_TYPE_ESP = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
export const GPT_TYPE_XBOOTLDR = 'bc13c2ff-59e6-4262-a352-b275fd6f7172';
export const GPT_TYPE_LINUX_LVM = 'e6d6d379-f507-44c2-a23c-238f2a3df928';
export const GPT_TYPE_LINUX_LUKS = 'ca7d7ccb-63ed-4c53-861c-1742536059cc';
export const GPT_TYPE_LINUX_SWAP = '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f';
export const GPT_TYPE_BIOS_BOOT = '21686148-6449-6e6f-744e-656564454649';
export const MBR_TYPE_GPT_PROTECTIVE = 0xee;
const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);
const MAX_LOGICAL = 128;

/** A GUID as stored on disk (mixed endian) to its usual text form. */
export function decodeGuid(b: Uint8Array, at: number): string {
  const hex = (i: number) => b[at + i]!.toString(16).padStart(2, '0');
  const le = (idx: number[]) => idx.map(hex).join('');
  return `${le([3, 2, 1, 0])}-${le([5, 4])}-${le([7, 6])}-${le([8, 9])}-${le([10, 11, 12, 13, 14, 15])}`;
}

const u32 = (b: Uint8Array, at: number): number => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
const u64 = (b: Uint8Array, at: number): number => u32(b, at) + u32(b, at + 4) * 0x100000000;

/** Reads bytes from the disk; returns fewer bytes at the end of the disk. */
export type ReadAt = (offset: number, length: number) => Promise<Uint8Array>;

export function hasMbrSignature(sector0: Uint8Array): boolean {
  return sector0.length >= 512 && sector0[510] === 0x55 && sector0[511] === 0xaa;
}

export interface GptHeader {
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

/** Decodes and checks a GPT header sector; null with a reason when invalid. */
export function decodeGptHeader(sector: Uint8Array): { header: GptHeader } | { problem: string } {
  if (sector.length < 8 || Buffer.from(sector.subarray(0, 8)).toString('latin1') !== GPT_SIGNATURE) return { problem: 'no "EFI PART" signature' };
  if (sector.length < 92) return { problem: 'GPT header sector is short' };
  const headerSize = u32(sector, 12);
  if (headerSize < 92 || headerSize > sector.length) return { problem: `GPT header size ${headerSize} is invalid` };
  const copy = Uint8Array.from(sector.subarray(0, headerSize));
  copy.fill(0, 16, 20);
  if (crc32(copy) !== u32(sector, 16)) return { problem: 'GPT header CRC32 mismatch' };
  const header: GptHeader = {
    myLba: u64(sector, 24),
    alternateLba: u64(sector, 32),
    firstUsableLba: u64(sector, 40),
    lastUsableLba: u64(sector, 48),
    entriesLba: u64(sector, 72),
    entryCount: u32(sector, 80),
    entrySize: u32(sector, 84),
    entriesCrc: u32(sector, 88),
  };
  if (header.entrySize < 128 || header.entrySize % 8 !== 0 || header.entrySize > 4096) return { problem: `GPT entry size ${header.entrySize} is invalid` };
  if (header.entryCount > 16384) return { problem: `GPT claims ${header.entryCount} entries` };
  return { header };
}

export function decodeGptEntries(header: GptHeader, bytes: Uint8Array, sectorSize: number, diskSize: number): { partitions: Partition[]; problems: string[] } {
  const problems: string[] = [];
  const need = header.entryCount * header.entrySize;
  if (bytes.length < need) return { partitions: [], problems: ['GPT entry array is cut short'] };
  if (crc32(bytes.subarray(0, need)) !== header.entriesCrc) problems.push('GPT entry array CRC32 mismatch');
  const partitions: Partition[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const at = i * header.entrySize;
    const type = decodeGuid(bytes, at);
    if (type === '00000000-0000-0000-0000-000000000000') continue;
    const first = u64(bytes, at + 32);
    const last = u64(bytes, at + 40);
    let name = Buffer.from(bytes.subarray(at + 56, at + 128)).toString('utf16le');
    const nul = name.indexOf('\0');
    if (nul >= 0) name = name.slice(0, nul);
    const offset = first * sectorSize;
    const size = (last - first + 1) * sectorSize;
    if (last < first || offset + size > diskSize) {
      problems.push(`GPT partition ${i + 1} lies outside the disk`);
      continue;
    }
    partitions.push({ number: i + 1, offset, size, type, uuid: decodeGuid(bytes, at + 16), name: name || null });
  }
  return { partitions, problems };
}

function mbrEntries(sector: Uint8Array): { type: number; lba: number; count: number; slot: number }[] {
  const out: { type: number; lba: number; count: number; slot: number }[] = [];
  for (let k = 0; k < 4; k++) {
    const at = 0x1be + k * 16;
    const type = sector[at + 4]!;
    const lba = u32(sector, at + 8);
    const count = u32(sector, at + 12);
    if (type !== 0 && count !== 0) out.push({ type, lba, count, slot: k });
  }
  return out;
}

/** Reads the partition table of a disk of `diskSize` bytes. Never throws for bad data; IO errors propagate. */
export async function readPartitionTable(readAt: ReadAt, diskSize: number, sectorSizes: readonly number[] = [512, 4096]): Promise<PartitionTable | null> {
  const head = await readAt(0, 8192);
  if (!hasMbrSignature(head)) {
    // A GPT disk always has a protective MBR, but be lenient: look for the header anyway.
  }
  const entries = hasMbrSignature(head) ? mbrEntries(head) : [];
  const protective = entries.some((e) => e.type === MBR_TYPE_GPT_PROTECTIVE);
  for (const ss of sectorSizes) {
    if (!protective && hasMbrSignature(head) && entries.length) break;
    const problems: string[] = [];
    let decoded = decodeGptHeader((await readAt(ss, ss)).subarray(0, ss));
    if ('problem' in decoded) {
      if (decoded.problem === 'no "EFI PART" signature') continue;
      problems.push(`primary ${decoded.problem}; using the backup GPT`);
      const lastLba = Math.floor(diskSize / ss) - 1;
      decoded = decodeGptHeader((await readAt(lastLba * ss, ss)).subarray(0, ss));
      if ('problem' in decoded) return { scheme: 'gpt', sectorSize: ss, partitions: [], problems: [...problems, `backup ${decoded.problem}`] };
    }
    const h = decoded.header;
    const bytes = await readAt(h.entriesLba * ss, h.entryCount * h.entrySize);
    const r = decodeGptEntries(h, bytes, ss, diskSize);
    return { scheme: 'gpt', sectorSize: ss, partitions: r.partitions, problems: [...problems, ...r.problems] };
  }
  if (!hasMbrSignature(head) || entries.length === 0) return null;
  // A FAT or NTFS boot sector also ends in 55 AA: its "entries" are nonsense.
  if (entries.some((e) => e.lba === 0 || (e.lba + e.count) * 512 > diskSize * 1.001 + 512)) {
    if (entries.every((e) => e.lba === 0 || (e.lba + e.count) * 512 > diskSize + 512)) return null;
  }
  const problems: string[] = [];
  const partitions: Partition[] = [];
  const sig = u32(head, 0x1b8).toString(16).padStart(8, '0');
  for (const e of entries) {
    const offset = e.lba * 512;
    const size = e.count * 512;
    if (offset + size > diskSize) {
      problems.push(`MBR partition ${e.slot + 1} lies outside the disk`);
      continue;
    }
    if (MBR_EXTENDED.has(e.type)) {
      // Walk the EBR chain: each EBR's first entry is a logical partition
      // (relative to this EBR), the second links to the next EBR (relative
      // to the extended partition's start).
      let ebr = e.lba;
      let n = 5;
      const seen = new Set<number>();
      while (ebr && n < 5 + MAX_LOGICAL && !seen.has(ebr)) {
        seen.add(ebr);
        if (ebr * 512 >= diskSize) {
          problems.push('an EBR lies outside the disk');
          break;
        }
        const sec = await readAt(ebr * 512, 512);
        if (!hasMbrSignature(sec)) {
          problems.push(`EBR at sector ${ebr} has no signature`);
          break;
        }
        const [logical, link] = [0, 1].map((k) => ({ type: sec[0x1be + k * 16 + 4]!, lba: u32(sec, 0x1be + k * 16 + 8), count: u32(sec, 0x1be + k * 16 + 12) }));
        if (logical && logical.type && logical.count) {
          const off = (ebr + logical.lba) * 512;
          const sz = logical.count * 512;
          if (off + sz <= diskSize) partitions.push({ number: n, offset: off, size: sz, type: `0x${logical.type.toString(16).padStart(2, '0')}`, uuid: `${sig}-${n.toString(16).padStart(2, '0')}`, name: null });
          else problems.push(`logical partition ${n} lies outside the disk`);
          n++;
        }
        ebr = link && link.type && link.count ? e.lba + link.lba : 0;
      }
      continue;
    }
    partitions.push({ number: e.slot + 1, offset, size, type: `0x${e.type.toString(16).padStart(2, '0')}`, uuid: `${sig}-${(e.slot + 1).toString(16).padStart(2, '0')}`, name: null });
  }
  partitions.sort((a, b) => a.number - b.number);
  return { scheme: 'mbr', sectorSize: 512, partitions, problems };
}

/**
 * The id of a disk's partition table, as `lsblk -o PTUUID` prints it: the
 * GPT disk GUID (header offset 56), else the MBR disk signature (offset
 * 0x1B8) as 8 hex digits; null when the disk has neither.
 */
export async function readDiskId(readAt: ReadAt, sectorSizes: readonly number[] = [512, 4096]): Promise<string | null> {
  const head = await readAt(0, 512);
  for (const ss of sectorSizes) {
    const decoded = decodeGptHeader((await readAt(ss, ss)).subarray(0, ss));
    if ('header' in decoded) return decodeGuid((await readAt(ss + 56, 16)).subarray(0, 16), 0);
  }
  if (!hasMbrSignature(head)) return null;
  return u32(head, 0x1b8).toString(16).padStart(8, '0');
}
