// El Torito ("Bootable CD-ROM Format Specification", Phoenix/IBM, 1.0, 1995):
// the boot record volume descriptor and the boot catalog it points to. Pure.
import { IsoFormatError } from './iso9660';

/** 2.0: the boot system identifier of the boot record volume descriptor, zero-padded to 32 bytes. */
export const EL_TORITO_SYSTEM_ID = 'EL TORITO SPECIFICATION';
/** 2.1: platform ids; 0xEF (EFI) was added by the UEFI specification (2.6, 12.3.2.1). */
export const PLATFORM_X86 = 0x00;
export const PLATFORM_PPC = 0x01;
export const PLATFORM_MAC = 0x02;
export const PLATFORM_EFI = 0xef;
/** 2.1-2.4: entry header bytes. */
const VALIDATION_HEADER = 0x01;
const BOOTABLE = 0x88;
const NOT_BOOTABLE = 0x00;
const SECTION_HEADER_MORE = 0x90;
const SECTION_HEADER_FINAL = 0x91;
const EXTENSION = 0x44;
const ENTRY_SIZE = 32;

export type BootPlatform = 'bios' | 'uefi' | 'powerpc' | 'mac' | 'other';
export type BootEmulation = 'none' | 'floppy-1.2M' | 'floppy-1.44M' | 'floppy-2.88M' | 'hard-disk' | 'unknown';

export interface BootImage {
  platform: BootPlatform;
  platformId: number;
  bootable: boolean;
  emulation: BootEmulation;
  /** Load RBA: the image's first 2048-byte block. */
  loadBlock: number;
  /** Sector count: "virtual" 512-byte sectors; 0 or 1 for an EFI image often means "the rest of the file" (or that it did not fit 16 bits). */
  sectorCount: number;
}

/** 2.0: the boot catalog's block, when the sector is an El Torito boot record; null otherwise. */
export function decodeBootRecord(sector: Buffer): number | null {
  if (sector.length < 75 || sector[0] !== 0) return null;
  if (sector.toString('latin1', 7, 39).replace(/\0+$/, '') !== EL_TORITO_SYSTEM_ID) return null;
  return sector.readUInt32LE(71);
}

function platformOf(id: number): BootPlatform {
  if (id === PLATFORM_X86) return 'bios';
  if (id === PLATFORM_EFI) return 'uefi';
  if (id === PLATFORM_PPC) return 'powerpc';
  if (id === PLATFORM_MAC) return 'mac';
  return 'other';
}

const EMULATIONS: BootEmulation[] = ['none', 'floppy-1.2M', 'floppy-1.44M', 'floppy-2.88M', 'hard-disk'];

function decodeEntry(e: Buffer, platformId: number): BootImage {
  return {
    platform: platformOf(platformId),
    platformId,
    bootable: e[0] === BOOTABLE,
    emulation: EMULATIONS[e[1]! & 0x0f] ?? 'unknown',
    sectorCount: e.readUInt16LE(6),
    loadBlock: e.readUInt32LE(8),
  };
}

/**
 * 2.1-2.4: the validation entry (header 01, 55 AA, words summing to zero), the
 * initial/default entry, then section headers (90 more follow, 91 final) each
 * with its count of section entries, and extension entries (44) that are
 * skipped. Stops at the final section's last entry or at an entry that is
 * none of these (the catalog's end is not recorded anywhere else).
 */
export function decodeBootCatalog(catalog: Buffer): BootImage[] {
  if (catalog.length < 2 * ENTRY_SIZE) throw new IsoFormatError('the El Torito boot catalog is cut short');
  const v = catalog.subarray(0, ENTRY_SIZE);
  if (v[0] !== VALIDATION_HEADER || v[30] !== 0x55 || v[31] !== 0xaa) throw new IsoFormatError('the El Torito boot catalog has no validation entry (01 ... 55 AA)');
  let sum = 0;
  for (let i = 0; i < ENTRY_SIZE; i += 2) sum = (sum + v.readUInt16LE(i)) & 0xffff;
  if (sum !== 0) throw new IsoFormatError(`the El Torito validation entry's checksum is wrong (its words sum to 0x${sum.toString(16)}, not 0)`);
  const images: BootImage[] = [];
  const initial = catalog.subarray(ENTRY_SIZE, 2 * ENTRY_SIZE);
  if (initial[0] !== BOOTABLE && initial[0] !== NOT_BOOTABLE) throw new IsoFormatError(`the El Torito initial entry's boot indicator is 0x${initial[0]!.toString(16)}, not 0x88 or 0x00`);
  images.push(decodeEntry(initial, v[1]!));
  let at = 2 * ENTRY_SIZE;
  let final = false;
  while (!final && at + ENTRY_SIZE <= catalog.length) {
    const header = catalog[at]!;
    if (header !== SECTION_HEADER_MORE && header !== SECTION_HEADER_FINAL) break;
    final = header === SECTION_HEADER_FINAL;
    const platformId = catalog[at + 1]!;
    let count = catalog.readUInt16LE(at + 2);
    at += ENTRY_SIZE;
    while (count > 0 && at + ENTRY_SIZE <= catalog.length) {
      const e = catalog.subarray(at, at + ENTRY_SIZE);
      at += ENTRY_SIZE;
      if (e[0] === EXTENSION) continue;
      if (e[0] !== BOOTABLE && e[0] !== NOT_BOOTABLE) throw new IsoFormatError(`an El Torito section entry's boot indicator is 0x${e[0]!.toString(16)}, not 0x88 or 0x00`);
      images.push(decodeEntry(e, platformId));
      count--;
      // 2.5: bit 5 of the media type says an extension entry follows.
      while (e[1]! & 0x20 && at + ENTRY_SIZE <= catalog.length && catalog[at] === EXTENSION) at += ENTRY_SIZE;
    }
    if (count > 0) throw new IsoFormatError('an El Torito section names more entries than the boot catalog holds');
  }
  return images;
}
