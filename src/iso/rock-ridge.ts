// The System Use Sharing Protocol (SUSP, IEEE P1281 draft 1.12) and the Rock
// Ridge Interchange Protocol (RRIP, IEEE P1282 draft 1.12) entries that carry
// POSIX names and symbolic links in a directory record's system use area.
// Pure: the continuation areas (CE) an area points to are returned for the
// reader to fetch; nothing here reads.
import { IsoFormatError } from './iso9660';

/** One SUSP entry (P1281 4.1): two signature bytes, length, version, data. */
export interface SuspEntry {
  signature: string;
  version: number;
  data: Buffer;
}

/** P1281 5.1: where the system use area goes on. */
export interface Continuation {
  block: number;
  offset: number;
  length: number;
}

/** The entries of one area (a record's system use field, or a continuation area) and the CE it names, if any. */
export function decodeSuspArea(area: Buffer): { entries: SuspEntry[]; continuation: Continuation | null } {
  const entries: SuspEntry[] = [];
  let continuation: Continuation | null = null;
  let at = 0;
  // P1281 4.1: an entry is at least 4 bytes; fewer left over is padding.
  while (at + 4 <= area.length) {
    const signature = area.toString('latin1', at, at + 2);
    const length = area[at + 2]!;
    if (length === 0 && signature === '\0\0') break; // zero padding
    if (length < 4 || at + length > area.length) throw new IsoFormatError(`a Rock Ridge ${JSON.stringify(signature)} entry claims ${length} bytes where ${area.length - at} are left`);
    const data = area.subarray(at + 4, at + length);
    if (signature === 'ST') break; // P1281 5.4: the terminator
    if (signature === 'CE') {
      if (data.length < 24) throw new IsoFormatError('a Rock Ridge CE entry is too short');
      continuation = { block: data.readUInt32LE(0), offset: data.readUInt32LE(8), length: data.readUInt32LE(16) };
    } else {
      entries.push({ signature, version: area[at + 3]!, data });
    }
    at += length;
  }
  return { entries, continuation };
}

/** P1281 5.3: the SP entry in the root's "." record: check bytes BE EF, and the bytes to skip in every area. */
export function decodeSpEntry(systemUse: Buffer): { skip: number } | null {
  if (systemUse.length < 7 || systemUse.toString('latin1', 0, 2) !== 'SP' || systemUse[2]! < 7) return null;
  if (systemUse[4] !== 0xbe || systemUse[5] !== 0xef) return null;
  return { skip: systemUse[6]! };
}

/** RRIP 4.1.4 NM flags. */
const NM_CONTINUE = 0x01;
const NM_CURRENT = 0x02;
const NM_PARENT = 0x04;
/** RRIP 4.1.3.1 SL component flags. */
const SL_CONTINUE = 0x01;
const SL_CURRENT = 0x02;
const SL_PARENT = 0x04;
const SL_ROOT = 0x08;

export interface RockRidgeFields {
  /** The POSIX name (NM), when the record has one. */
  name: string | null;
  /** The target of a symbolic link (SL). */
  symlink: string | null;
  /** CL (RRIP 4.1.5.1): this file entry stands for the directory relocated to that block. */
  childLink: number | null;
  /** RE (RRIP 4.1.5.3): this directory was relocated; its parent lists it through a CL. */
  relocated: boolean;
  /** Any RRIP entry at all was seen. */
  any: boolean;
}

const RRIP = new Set(['PX', 'PN', 'SL', 'NM', 'CL', 'PL', 'RE', 'TF', 'SF', 'RR']);

/** The Rock Ridge fields of one record, from all its entries (its own area and its continuations, in order). */
export function decodeRockRidge(entries: readonly SuspEntry[]): RockRidgeFields {
  const out: RockRidgeFields = { name: null, symlink: null, childLink: null, relocated: false, any: false };
  let name = '';
  let nameDone = false;
  const components: string[] = [];
  let component = '';
  let componentOpen = false;
  for (const e of entries) {
    if (RRIP.has(e.signature)) out.any = true;
    if (e.signature === 'NM' && !nameDone && e.data.length >= 1) {
      const flags = e.data[0]!;
      // "." and ".." records carry CURRENT/PARENT; their names are fixed.
      if (flags & (NM_CURRENT | NM_PARENT)) continue;
      name += e.data.toString('utf8', 1);
      if (!(flags & NM_CONTINUE)) nameDone = true;
      out.name = name;
    } else if (e.signature === 'SL' && e.data.length >= 1) {
      let at = 1;
      while (at + 2 <= e.data.length) {
        const flags = e.data[at]!;
        const len = e.data[at + 1]!;
        if (at + 2 + len > e.data.length) throw new IsoFormatError('a Rock Ridge SL component runs past its entry');
        const text = flags & SL_CURRENT ? '.' : flags & SL_PARENT ? '..' : flags & SL_ROOT ? '' : e.data.toString('utf8', at + 2, at + 2 + len);
        component += text;
        componentOpen = true;
        if (!(flags & SL_CONTINUE)) {
          components.push(component);
          component = '';
          componentOpen = false;
        }
        at += 2 + len;
      }
      if (componentOpen && !(e.data[0]! & SL_CONTINUE)) {
        components.push(component);
        component = '';
        componentOpen = false;
      }
      out.symlink = components.length === 1 && components[0] === '' ? '/' : components.join('/');
    } else if (e.signature === 'CL' && e.data.length >= 8) {
      out.childLink = e.data.readUInt32LE(0);
    } else if (e.signature === 'RE') {
      out.relocated = true;
    }
  }
  return out;
}
