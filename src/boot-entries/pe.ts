// Reads the section table of a PE/COFF image (the format of EFI programs and
// Unified Kernel Images) from its first bytes. Pure: it never reads a file,
// only the header bytes handed to it, and it never throws: every problem is
// an error string. Offsets and sizes are checked against the file size, so a
// broken header can never make the caller read outside the file.
//
// Layout (PE Format, "Overview"): the MS-DOS stub starts with "MZ" and holds
// at 0x3c the offset of the "PE\0\0" signature, followed by the 20-byte COFF
// file header, the optional header (SizeOfOptionalHeader bytes) and the
// section table, 40 bytes per section.

export const IMAGE_DOS_SIGNATURE = 0x5a4d; // "MZ"
export const IMAGE_NT_SIGNATURE = 0x00004550; // "PE\0\0"
export const IMAGE_FILE_MACHINE_AMD64 = 0x8664;
export const IMAGE_FILE_MACHINE_I386 = 0x014c;
export const IMAGE_FILE_MACHINE_ARM64 = 0xaa64;
export const IMAGE_SIZEOF_SECTION_HEADER = 40;
/** "the Windows loader limits the number of sections to 96" */
export const MAX_SECTIONS = 96;
const E_LFANEW_OFFSET = 0x3c;
const COFF_HEADER_SIZE = 20;

export interface PeSection {
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  /** Where the section's bytes are in the file: min(VirtualSize, SizeOfRawData), as systemd-stub reads them. */
  fileOffset: number;
  fileSize: number;
}

export interface PeImage {
  machine: number;
  sections: PeSection[];
}

export type PeResult = { ok: true; image: PeImage } | { ok: false; error: string; needBytes?: number };

/**
 * Decodes the section table. `fileSize` is the whole file's size (the header
 * bytes may be a prefix of it). When the section table lies beyond `header`,
 * the result says how many bytes are needed.
 */
export function decodePeHeader(header: Uint8Array, fileSize: number = header.length): PeResult {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const fail = (error: string, needBytes?: number): PeResult => (needBytes === undefined ? { ok: false, error } : { ok: false, error, needBytes });
  if (header.length < 0x40) return fail('too short for a PE image (no MS-DOS header)');
  if (view.getUint16(0, true) !== IMAGE_DOS_SIGNATURE) return fail('not a PE image (no "MZ" signature)');
  const peOffset = view.getUint32(E_LFANEW_OFFSET, true);
  if (peOffset < 0x40 || peOffset > fileSize - 4 - COFF_HEADER_SIZE) return fail(`broken PE header: PE signature offset ${peOffset} is outside the file`);
  if (peOffset + 4 + COFF_HEADER_SIZE > header.length) return fail('PE header lies beyond the bytes read', peOffset + 4 + COFF_HEADER_SIZE);
  if (view.getUint32(peOffset, true) !== IMAGE_NT_SIGNATURE) return fail('broken PE header: no "PE\\0\\0" signature');
  const coff = peOffset + 4;
  const machine = view.getUint16(coff, true);
  const numberOfSections = view.getUint16(coff + 2, true);
  const sizeOfOptionalHeader = view.getUint16(coff + 16, true);
  if (numberOfSections === 0) return fail('broken PE header: no sections');
  if (numberOfSections > MAX_SECTIONS) return fail(`broken PE header: ${numberOfSections} sections (at most ${MAX_SECTIONS})`);
  const tableStart = coff + COFF_HEADER_SIZE + sizeOfOptionalHeader;
  const tableEnd = tableStart + numberOfSections * IMAGE_SIZEOF_SECTION_HEADER;
  if (tableEnd > fileSize) return fail('broken PE header: the section table runs past the end of the file');
  if (tableEnd > header.length) return fail('PE section table lies beyond the bytes read', tableEnd);
  const sections: PeSection[] = [];
  for (let i = 0; i < numberOfSections; i++) {
    const at = tableStart + i * IMAGE_SIZEOF_SECTION_HEADER;
    let name = '';
    for (let k = 0; k < 8; k++) {
      const c = header[at + k]!;
      if (c === 0) break;
      name += String.fromCharCode(c);
    }
    const virtualSize = view.getUint32(at + 8, true);
    const virtualAddress = view.getUint32(at + 12, true);
    const sizeOfRawData = view.getUint32(at + 16, true);
    const pointerToRawData = view.getUint32(at + 20, true);
    const fileSizeOfSection = virtualSize === 0 ? sizeOfRawData : Math.min(virtualSize, sizeOfRawData);
    sections.push({ name, virtualSize, virtualAddress, sizeOfRawData, pointerToRawData, fileOffset: pointerToRawData, fileSize: fileSizeOfSection });
  }
  return { ok: true, image: { machine, sections } };
}

/** Whether a section's bytes lie inside a file of `fileSize` bytes. */
export function sectionInFile(section: PeSection, fileSize: number): boolean {
  return section.fileSize > 0 && section.fileOffset >= 0 && section.fileOffset + section.fileSize <= fileSize;
}

/**
 * The sections a UKI boots with when no profile is chosen: the base sections
 * (before the first `.profile`) overridden by those of profile 0 (between the
 * first and second `.profile`). First of each name wins, as in systemd-stub.
 */
export function selectUkiSections(sections: readonly PeSection[]): Map<string, PeSection> {
  const base = new Map<string, PeSection>();
  const profile0 = new Map<string, PeSection>();
  let profile = -1;
  for (const s of sections) {
    if (s.name === '.profile') {
      profile++;
      continue;
    }
    const target = profile < 0 ? base : profile === 0 ? profile0 : null;
    if (target && !target.has(s.name)) target.set(s.name, s);
  }
  for (const [k, v] of profile0) base.set(k, v);
  return base;
}

export function machineName(machine: number): string {
  switch (machine) {
    case IMAGE_FILE_MACHINE_AMD64:
      return 'x64';
    case IMAGE_FILE_MACHINE_I386:
      return 'ia32';
    case IMAGE_FILE_MACHINE_ARM64:
      return 'aa64';
    default:
      return `machine 0x${machine.toString(16)}`;
  }
}
