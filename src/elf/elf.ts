// A pure reader for the parts of ELF files the image builder needs
// (System V ABI, "gABI", chapters 4 "Object Files" and 5 "Program Loading and
// Dynamic Linking"):
//   - PT_INTERP, the program interpreter (dynamic loader) of an executable;
//   - the dynamic section's DT_NEEDED, DT_SONAME, DT_RPATH and DT_RUNPATH;
//   - named sections, for a kernel module's `.modinfo`.
// It touches no file: give it the bytes. Anything malformed is an ElfError.

export const ELFMAG = '\x7fELF';
export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const ELFDATA2MSB = 2;

export const ET_REL = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;

export const PT_LOAD = 1;
export const PT_DYNAMIC = 2;
export const PT_INTERP = 3;

export const DT_NULL = 0;
export const DT_NEEDED = 1;
export const DT_STRTAB = 5;
export const DT_STRSZ = 10;
export const DT_SONAME = 14;
export const DT_RPATH = 15;
export const DT_RUNPATH = 29;

export const SHT_NOBITS = 8;

export class ElfError extends Error {}

export interface ElfHeader {
  /** ELFCLASS32 or ELFCLASS64. */
  elfClass: number;
  /** ELFDATA2LSB or ELFDATA2MSB. */
  data: number;
  /** e_type: ET_REL (a kernel module), ET_EXEC, ET_DYN (PIE or shared library). */
  type: number;
  /** e_machine, e.g. 62 for EM_X86_64. */
  machine: number;
}

export interface ElfDynamicInfo extends ElfHeader {
  /** PT_INTERP without its NUL, e.g. `/lib64/ld-linux-x86-64.so.2`. */
  interpreter: string | undefined;
  /** DT_NEEDED in file order. */
  needed: string[];
  soname: string | undefined;
  /** DT_RPATH split at ':' (used only when there is no DT_RUNPATH). */
  rpath: string[];
  /** DT_RUNPATH split at ':'. */
  runpath: string[];
}

export interface ElfSection {
  name: string;
  type: number;
  offset: number;
  size: number;
}

interface Reader {
  header: ElfHeader;
  u16(off: number): number;
  u32(off: number): number;
  /** A word of the file's class (4 or 8 bytes), as a safe integer. */
  word(off: number): number;
  wordSize: number;
}

function reader(buf: Uint8Array): Reader {
  if (buf.length < 52) throw new ElfError('not an ELF file: too short');
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.toString('latin1', 0, 4) !== ELFMAG) throw new ElfError('not an ELF file: bad magic');
  const elfClass = b[4]!;
  const data = b[5]!;
  if (elfClass !== ELFCLASS32 && elfClass !== ELFCLASS64) throw new ElfError(`unknown ELF class ${elfClass}`);
  if (data !== ELFDATA2LSB && data !== ELFDATA2MSB) throw new ElfError(`unknown ELF data encoding ${data}`);
  if (elfClass === ELFCLASS64 && b.length < 64) throw new ElfError('ELF header truncated');
  const le = data === ELFDATA2LSB;
  const check = (off: number, n: number): void => {
    if (!Number.isSafeInteger(off) || off < 0 || off + n > b.length) {
      throw new ElfError(`ELF read of ${n} bytes at ${off} is outside the file`);
    }
  };
  const u16 = (off: number): number => (check(off, 2), le ? b.readUInt16LE(off) : b.readUInt16BE(off));
  const u32 = (off: number): number => (check(off, 4), le ? b.readUInt32LE(off) : b.readUInt32BE(off));
  const u64 = (off: number): number => {
    check(off, 8);
    const v = le ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError(`ELF value at ${off} is too large`);
    return Number(v);
  };
  const wordSize = elfClass === ELFCLASS64 ? 8 : 4;
  return {
    header: { elfClass, data, type: u16(16), machine: u16(18) },
    u16,
    u32,
    word: wordSize === 8 ? u64 : u32,
    wordSize,
  };
}

interface ProgramHeader {
  type: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

function programHeaders(r: Reader): ProgramHeader[] {
  const is64 = r.wordSize === 8;
  const phoff = r.word(is64 ? 32 : 28);
  const phentsize = r.u16(is64 ? 54 : 42);
  const phnum = r.u16(is64 ? 56 : 44);
  if (phnum === 0) return [];
  if (phentsize < (is64 ? 56 : 32)) throw new ElfError(`ELF program header size ${phentsize} is too small`);
  const out: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    out.push(
      is64
        ? { type: r.u32(p), offset: r.word(p + 8), vaddr: r.word(p + 16), filesz: r.word(p + 32) }
        : { type: r.u32(p), offset: r.word(p + 4), vaddr: r.word(p + 8), filesz: r.word(p + 16) },
    );
  }
  return out;
}

function cString(buf: Uint8Array, off: number, limit: number): string {
  if (off < 0 || off >= limit || limit > buf.length) throw new ElfError(`ELF string at ${off} is outside its table`);
  let end = off;
  while (end < limit && buf[end] !== 0) end++;
  if (end === limit) throw new ElfError(`ELF string at ${off} is not NUL-terminated`);
  return Buffer.from(buf.buffer, buf.byteOffset + off, end - off).toString('utf8');
}

/** The ELF header's identification: class, byte order, type and machine. */
export function readElfHeader(buf: Uint8Array): ElfHeader {
  return reader(buf).header;
}

/** True when the bytes start with the ELF magic. */
export function isElf(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x7f && buf[1] === 0x45 && buf[2] === 0x4c && buf[3] === 0x46;
}

/**
 * The interpreter and dynamic-linking entries of an executable or shared
 * library. A static executable has no interpreter and no DT_NEEDED.
 */
export function readElfDynamic(buf: Uint8Array): ElfDynamicInfo {
  const r = reader(buf);
  const phs = programHeaders(r);
  const info: ElfDynamicInfo = {
    ...r.header,
    interpreter: undefined,
    needed: [],
    soname: undefined,
    rpath: [],
    runpath: [],
  };
  const interp = phs.find((p) => p.type === PT_INTERP);
  if (interp) info.interpreter = cString(buf, interp.offset, interp.offset + interp.filesz);

  const dyn = phs.find((p) => p.type === PT_DYNAMIC);
  if (!dyn) return info;
  // Dynamic entries hold virtual addresses; PT_LOAD segments map them to file offsets.
  const loads = phs.filter((p) => p.type === PT_LOAD);
  const toOffset = (vaddr: number): number => {
    const seg = loads.find((p) => vaddr >= p.vaddr && vaddr < p.vaddr + p.filesz);
    if (!seg) throw new ElfError(`ELF address 0x${vaddr.toString(16)} is in no loaded segment`);
    return vaddr - seg.vaddr + seg.offset;
  };
  const entrySize = r.wordSize * 2;
  const entries: Array<{ tag: number; val: number }> = [];
  for (let off = dyn.offset; off + entrySize <= dyn.offset + dyn.filesz; off += entrySize) {
    // d_tag is a signed word; every tag read here is small and positive, so a
    // 64-bit tag with a non-zero high word is simply one we do not use.
    let tag = r.u32(off);
    if (r.wordSize === 8) {
      const [lo, hi] = r.header.data === ELFDATA2LSB ? [r.u32(off), r.u32(off + 4)] : [r.u32(off + 4), r.u32(off)];
      tag = hi === 0 ? lo : -1;
    }
    if (tag === DT_NULL) break;
    const relevant = tag === DT_NEEDED || tag === DT_STRTAB || tag === DT_STRSZ || tag === DT_SONAME || tag === DT_RPATH || tag === DT_RUNPATH;
    entries.push({ tag, val: relevant ? r.word(off + r.wordSize) : 0 });
  }
  const strtab = entries.find((e) => e.tag === DT_STRTAB);
  const strsz = entries.find((e) => e.tag === DT_STRSZ);
  if (!strtab || !strsz) {
    if (entries.some((e) => e.tag === DT_NEEDED || e.tag === DT_RUNPATH || e.tag === DT_RPATH)) {
      throw new ElfError('ELF dynamic section has no string table');
    }
    return info;
  }
  const strOff = toOffset(strtab.val);
  const strEnd = strOff + strsz.val;
  if (strEnd > buf.length) throw new ElfError('ELF dynamic string table is outside the file');
  const str = (i: number): string => cString(buf, strOff + i, strEnd);
  const splitPath = (s: string): string[] => s.split(':').filter((p) => p !== '');
  for (const e of entries) {
    if (e.tag === DT_NEEDED) info.needed.push(str(e.val));
    else if (e.tag === DT_SONAME) info.soname = str(e.val);
    else if (e.tag === DT_RPATH) info.rpath.push(...splitPath(str(e.val)));
    else if (e.tag === DT_RUNPATH) info.runpath.push(...splitPath(str(e.val)));
  }
  return info;
}

/** The section headers with their names (empty when the file has none). */
export function readElfSections(buf: Uint8Array): ElfSection[] {
  const r = reader(buf);
  const is64 = r.wordSize === 8;
  const shoff = r.word(is64 ? 40 : 32);
  const shentsize = r.u16(is64 ? 58 : 46);
  const shnum = r.u16(is64 ? 60 : 48);
  const shstrndx = r.u16(is64 ? 62 : 50);
  if (shoff === 0 || shnum === 0) return [];
  if (shentsize < (is64 ? 64 : 40)) throw new ElfError(`ELF section header size ${shentsize} is too small`);
  const raw: Array<{ name: number; type: number; offset: number; size: number }> = [];
  for (let i = 0; i < shnum; i++) {
    const s = shoff + i * shentsize;
    raw.push(
      is64
        ? { name: r.u32(s), type: r.u32(s + 4), offset: r.word(s + 24), size: r.word(s + 32) }
        : { name: r.u32(s), type: r.u32(s + 4), offset: r.word(s + 16), size: r.word(s + 20) },
    );
  }
  const names = raw[shstrndx];
  if (!names) throw new ElfError(`ELF section name table index ${shstrndx} is out of range`);
  if (names.offset + names.size > buf.length) throw new ElfError('ELF section name table is outside the file');
  return raw.map((s) => {
    if (s.type !== SHT_NOBITS && s.offset + s.size > buf.length) {
      throw new ElfError('ELF section is outside the file');
    }
    return { name: cString(buf, names.offset + s.name, names.offset + names.size), type: s.type, offset: s.offset, size: s.size };
  });
}

/** The bytes of the named section, or undefined when there is none. */
export function readElfSection(buf: Uint8Array, name: string): Uint8Array | undefined {
  const s = readElfSections(buf).find((x) => x.name === name);
  if (!s || s.type === SHT_NOBITS) return undefined;
  return buf.subarray(s.offset, s.offset + s.size);
}
