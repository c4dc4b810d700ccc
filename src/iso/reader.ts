// Reads an ISO 9660 image through a random-access read function, so that the
// same code works on a file, a block device or a download still in progress.
// Names come from Rock Ridge when the image has it (as Linux prefers), else
// from Joliet, else from ISO 9660 itself; a lookup that finds no exact name
// falls back to a case-insensitive match, as isolinux does.
//
// Everything the image says about where or how big something is gets checked
// against the image's size and the limits below before a byte is read, so a
// corrupted or hostile image ends in one IsoFormatError (a StiefelError), not
// in a crash, a hang or unbounded memory.
import { StiefelError } from '../errors';
import { decodeBootCatalog, decodeBootRecord, type BootImage } from './el-torito';
import {
  decodeDescriptorHeader,
  decodeDirectoryRecords,
  decodeVolumeDescriptor,
  FILE_FLAG_ASSOCIATED,
  FILE_FLAG_DIRECTORY,
  FILE_FLAG_MULTI_EXTENT,
  ISO_FIRST_DESCRIPTOR_SECTOR,
  ISO_SECTOR_SIZE,
  IsoFormatError,
  isoName,
  VD_BOOT_RECORD,
  VD_PRIMARY,
  VD_SUPPLEMENTARY,
  VD_TERMINATOR,
  type DirectoryRecord,
  type VolumeDescriptor,
} from './iso9660';
import { decodeRockRidge, decodeSpEntry, decodeSuspArea, type SuspEntry } from './rock-ridge';

/** Up to `length` bytes from `offset`; fewer only at the end of the data. */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

export interface IsoSource {
  /** How the image is named in messages (its path or URL). */
  name: string;
  /** Bytes available to read. */
  size: number;
  read: ReadAt;
}

export interface IsoLimits {
  /** Descriptors looked at before a terminator must have come. */
  maxDescriptors: number;
  /** One directory's extent. */
  maxDirectoryBytes: number;
  maxRecordsPerDirectory: number;
  /** Directories kept decoded; beyond this the cache starts over. */
  maxCachedDirectoryBytes: number;
  /** Path components followed in one lookup, symbolic links included. */
  maxPathComponents: number;
  maxSymlinkHops: number;
  /** Rock Ridge continuation areas (CE) chained from one record. */
  maxContinuations: number;
  /** Extents of one multi-extent file. */
  maxExtents: number;
  /** Boot catalog sectors read. */
  maxCatalogSectors: number;
}

export const DEFAULT_ISO_LIMITS: Readonly<IsoLimits> = Object.freeze({
  maxDescriptors: 64,
  maxDirectoryBytes: 8 * 1024 * 1024,
  maxRecordsPerDirectory: 100_000,
  maxCachedDirectoryBytes: 64 * 1024 * 1024,
  maxPathComponents: 64,
  maxSymlinkHops: 8,
  maxContinuations: 16,
  maxExtents: 4096,
  maxCatalogSectors: 4,
});

/** Which names the image's directories are read with. */
export type IsoNames = 'rock-ridge' | 'joliet' | 'iso9660';

export interface IsoExtent {
  /** In logical blocks. */
  block: number;
  length: number;
}

export interface IsoEntry {
  name: string;
  isDirectory: boolean;
  /** Bytes: the sum of its extents. */
  size: number;
  extents: IsoExtent[];
  /** Rock Ridge SL: the link's target, as written. */
  symlink: string | null;
  /** Seconds since the epoch, from the directory record. */
  recorded: number | null;
}

export interface IsoVolume {
  label: string;
  systemId: string;
  publisherId: string;
  preparerId: string;
  applicationId: string;
  created: string | null;
  modified: string | null;
  modifiedDigits: string;
  blockSize: number;
  blocks: number;
}

/** Prefixes the image's name to a decoder's message, once. */
function named(name: string, err: unknown): unknown {
  if (!(err instanceof IsoFormatError) || err.message.startsWith(`${name}: `) || err.message.startsWith(`${name} `)) return err;
  return new IsoFormatError(`${name}: ${err.message}`, err.code);
}

export class IsoImage {
  readonly #source: IsoSource;
  readonly #limits: IsoLimits;
  readonly #blockSize: number;
  readonly #root: IsoEntry;
  readonly #joliet: boolean;
  readonly #suspSkip: number | null;
  readonly #directories = new Map<number, IsoEntry[]>();
  #cachedBytes = 0;
  readonly volume: IsoVolume;
  readonly names: IsoNames;
  /** The El Torito boot catalog's block, when the image has a boot record. */
  readonly bootCatalogBlock: number | null;

  private constructor(source: IsoSource, limits: IsoLimits, primary: VolumeDescriptor, tree: VolumeDescriptor, suspSkip: number | null, bootCatalogBlock: number | null) {
    this.#source = source;
    this.#limits = limits;
    this.#blockSize = primary.blockSize;
    this.#joliet = tree.joliet;
    this.#suspSkip = suspSkip;
    this.#root = { name: '', isDirectory: true, size: tree.root.dataLength, extents: [{ block: tree.root.extent, length: tree.root.dataLength }], symlink: null, recorded: tree.root.recorded };
    this.names = suspSkip !== null ? 'rock-ridge' : tree.joliet ? 'joliet' : 'iso9660';
    this.bootCatalogBlock = bootCatalogBlock;
    this.volume = {
      label: primary.volumeId,
      systemId: primary.systemId,
      publisherId: primary.publisherId,
      preparerId: primary.preparerId,
      applicationId: primary.applicationId,
      created: primary.created,
      modified: primary.modified,
      modifiedDigits: primary.modifiedDigits,
      blockSize: primary.blockSize,
      blocks: primary.volumeBlocks,
    };
  }

  get source(): IsoSource {
    return this.#source;
  }

  /** Reads the volume descriptors (ECMA-119 8) and works out which names to use. */
  static async open(source: IsoSource, options: { limits?: Partial<IsoLimits> } = {}): Promise<IsoImage> {
    const limits = { ...DEFAULT_ISO_LIMITS, ...options.limits };
    try {
      return await IsoImage.#open(source, limits);
    } catch (err) {
      throw named(source.name, err);
    }
  }

  static async #open(source: IsoSource, limits: IsoLimits): Promise<IsoImage> {
    const first = ISO_FIRST_DESCRIPTOR_SECTOR * ISO_SECTOR_SIZE;
    if (source.size < first + ISO_SECTOR_SIZE) {
      throw new IsoFormatError(`${source.name} is not an ISO 9660 image (it is ${source.size} bytes, too short to reach sector 16)`, 'E_ISO_NOT_ISO');
    }
    let primary: VolumeDescriptor | null = null;
    let joliet: VolumeDescriptor | null = null;
    let bootCatalogBlock: number | null = null;
    for (let i = 0; ; i++) {
      const at = first + i * ISO_SECTOR_SIZE;
      if (i >= limits.maxDescriptors) throw new IsoFormatError(`no volume descriptor set terminator within ${limits.maxDescriptors} sectors`);
      if (at + ISO_SECTOR_SIZE > source.size) throw new IsoFormatError('the volume descriptors run to the end of the image without a terminator: the file is truncated');
      const sector = await readExactly(source, at, ISO_SECTOR_SIZE, `volume descriptor ${i}`);
      const header = decodeDescriptorHeader(sector);
      if (!header) {
        if (i === 0) throw new IsoFormatError(`${source.name} is not an ISO 9660 image (no CD001 at sector 16)`, 'E_ISO_NOT_ISO');
        throw new IsoFormatError(`sector ${16 + i} interrupts the volume descriptors (no CD001) before their terminator`);
      }
      if (header.type === VD_TERMINATOR) break;
      if (header.type === VD_PRIMARY && !primary) primary = decodeVolumeDescriptor(sector);
      else if (header.type === VD_SUPPLEMENTARY && !joliet) {
        const svd = decodeVolumeDescriptor(sector);
        if (svd.joliet) joliet = svd;
      } else if (header.type === VD_BOOT_RECORD && bootCatalogBlock === null) bootCatalogBlock = decodeBootRecord(sector);
    }
    if (!primary) throw new IsoFormatError('it has no primary volume descriptor (ECMA-119 8.4)');
    const imageBytes = primary.volumeBlocks * primary.blockSize;
    if (imageBytes > source.size) {
      throw new IsoFormatError(`${source.name} is truncated: its volume descriptor says ${imageBytes} bytes (${primary.volumeBlocks} blocks), there are ${source.size}`, 'E_ISO_TRUNCATED');
    }
    // Rock Ridge shows itself by an SP entry in the root's "." record (P1281 5.3).
    const probe = new IsoImage(source, limits, primary, primary, null, bootCatalogBlock);
    const rootData = await probe.#readExtent(primary.root.extent, Math.min(primary.root.dataLength, ISO_SECTOR_SIZE), 'the root directory');
    const dot = decodeDirectoryRecords(rootData.subarray(0, Math.min(rootData.length, ISO_SECTOR_SIZE)), { maxRecords: limits.maxRecordsPerDirectory })[0];
    const sp = dot ? decodeSpEntry(dot.systemUse) : null;
    if (sp) return new IsoImage(source, limits, primary, primary, sp.skip, bootCatalogBlock);
    if (joliet) return new IsoImage(source, limits, primary, joliet, null, bootCatalogBlock);
    return probe;
  }

  /** Bytes at a block, checked against the image's end. */
  async #readExtent(block: number, length: number, what: string): Promise<Buffer> {
    return readExactly(this.#source, block * this.#blockSize, length, what);
  }

  /** A directory's entries (without "." and ".."), multi-extent files joined. */
  async #directory(dir: IsoEntry): Promise<IsoEntry[]> {
    const extent = dir.extents[0]!;
    const cached = this.#directories.get(extent.block);
    if (cached) return cached;
    if (extent.length > this.#limits.maxDirectoryBytes) throw new IsoFormatError(`a directory claims ${extent.length} bytes, more than the ${this.#limits.maxDirectoryBytes} allowed`);
    const data = await this.#readExtent(extent.block, extent.length, `the directory at block ${extent.block}`);
    const records = decodeDirectoryRecords(data, { maxRecords: this.#limits.maxRecordsPerDirectory });
    const entries: IsoEntry[] = [];
    let pending: IsoEntry | null = null;
    for (const [i, r] of records.entries()) {
      if (i < 2 && r.identifier.length === 1 && r.identifier[0]! <= 1) continue; // "." and ".."
      if (r.flags & FILE_FLAG_ASSOCIATED) continue;
      if (pending) {
        // ECMA-119 6.5.1: the records of one multi-extent file follow each other.
        pending.extents.push({ block: r.extent, length: r.dataLength });
        pending.size += r.dataLength;
        if (pending.extents.length > this.#limits.maxExtents) throw new IsoFormatError(`a file has more than ${this.#limits.maxExtents} extents`);
        if (!(r.flags & FILE_FLAG_MULTI_EXTENT)) pending = null;
        continue;
      }
      const entry = await this.#entry(r);
      if (!entry) continue;
      entries.push(entry);
      if (r.flags & FILE_FLAG_MULTI_EXTENT && !entry.isDirectory) pending = entry;
    }
    if (this.#cachedBytes + extent.length > this.#limits.maxCachedDirectoryBytes) {
      this.#directories.clear();
      this.#cachedBytes = 0;
    }
    this.#directories.set(extent.block, entries);
    this.#cachedBytes += extent.length;
    return entries;
  }

  /** One record as an entry, with its Rock Ridge name and link; null for a relocated directory (listed through its CL). */
  async #entry(r: DirectoryRecord): Promise<IsoEntry | null> {
    let name = isoName(r.identifier, this.#joliet);
    let isDirectory = (r.flags & FILE_FLAG_DIRECTORY) !== 0;
    let extents: IsoExtent[] = [{ block: r.extent, length: r.dataLength }];
    let symlink: string | null = null;
    if (this.#suspSkip !== null) {
      const rr = decodeRockRidge(await this.#suspEntries(r.systemUse));
      if (rr.relocated) return null;
      if (rr.name) name = rr.name;
      symlink = rr.symlink;
      if (rr.childLink !== null) {
        // RRIP 4.1.5.1: the real directory; its length is in its own "." record.
        const head = await this.#readExtent(rr.childLink, ISO_SECTOR_SIZE, `the relocated directory at block ${rr.childLink}`);
        const dot = decodeDirectoryRecords(head, { maxRecords: this.#limits.maxRecordsPerDirectory })[0];
        if (!dot) throw new IsoFormatError(`the relocated directory at block ${rr.childLink} has no "." record`);
        isDirectory = true;
        extents = [{ block: rr.childLink, length: dot.dataLength }];
      }
    }
    if (name === '' || name.includes('/') || name === '.' || name === '..') name = `?${r.extent}`;
    return { name, isDirectory, size: r.dataLength, extents, symlink, recorded: r.recorded };
  }

  /** A record's SUSP entries, its continuation areas (CE) followed; a chain that loops or runs long is an error. */
  async #suspEntries(systemUse: Buffer): Promise<SuspEntry[]> {
    const entries: SuspEntry[] = [];
    let area = systemUse.subarray(Math.min(this.#suspSkip ?? 0, systemUse.length));
    const seen = new Set<string>();
    for (let hops = 0; ; hops++) {
      const { entries: more, continuation } = decodeSuspArea(area);
      entries.push(...more);
      if (!continuation) return entries;
      const key = `${continuation.block}:${continuation.offset}`;
      if (seen.has(key)) throw new IsoFormatError(`Rock Ridge continuation areas form a loop (block ${continuation.block} again)`);
      seen.add(key);
      if (hops >= this.#limits.maxContinuations) throw new IsoFormatError(`a Rock Ridge record chains more than ${this.#limits.maxContinuations} continuation areas`);
      if (continuation.offset + continuation.length > this.#blockSize) throw new IsoFormatError(`a Rock Ridge continuation area (offset ${continuation.offset}, ${continuation.length} bytes) does not fit its block`);
      area = await readExactly(this.#source, continuation.block * this.#blockSize + continuation.offset, continuation.length, `the Rock Ridge continuation area at block ${continuation.block}`);
    }
  }

  /**
   * The entry at `path` ('/'-separated, from the root), symbolic links on the
   * way followed, and the last one too unless `followLast` is false; null when
   * there is none.
   */
  async lookup(path: string, options: { followLast?: boolean } = {}): Promise<IsoEntry | null> {
    try {
      return await this.#lookup(path, options.followLast ?? true);
    } catch (err) {
      throw named(this.#source.name, err);
    }
  }

  async #lookup(path: string, followLast: boolean): Promise<IsoEntry | null> {
    const todo = path.split('/').filter((p) => p !== '' && p !== '.');
    const stack: IsoEntry[] = [this.#root];
    let steps = 0;
    let hops = 0;
    while (todo.length > 0) {
      if (++steps > this.#limits.maxPathComponents) throw new IsoFormatError(`the path ${path} takes more than ${this.#limits.maxPathComponents} steps to follow`);
      const part = todo.shift()!;
      if (part === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const dir = stack[stack.length - 1]!;
      if (!dir.isDirectory) return null;
      const list = await this.#directory(dir);
      const lower = part.toLowerCase();
      const hit = list.find((e) => e.name === part) ?? list.find((e) => e.name.toLowerCase() === lower);
      if (!hit) return null;
      if (hit.symlink !== null && (todo.length > 0 || followLast)) {
        if (++hops > this.#limits.maxSymlinkHops) throw new IsoFormatError(`${path}: more than ${this.#limits.maxSymlinkHops} symbolic links on the way`);
        const target = hit.symlink.split('/').filter((p) => p !== '' && p !== '.');
        if (hit.symlink.startsWith('/')) stack.splice(1);
        todo.unshift(...target);
        continue;
      }
      stack.push(hit);
    }
    return stack[stack.length - 1]!;
  }

  /** The entries of the directory at `path`; null when it is not a directory. */
  async list(path: string): Promise<IsoEntry[] | null> {
    try {
      const dir = await this.#lookup(path, true);
      return dir?.isDirectory ? await this.#directory(dir) : null;
    } catch (err) {
      throw named(this.#source.name, err);
    }
  }

  /** A file's bytes; a file larger than `maxBytes` is an E_ISO_TOO_BIG error, not a read. */
  async readFile(entry: IsoEntry, options: { maxBytes: number }): Promise<Buffer> {
    if (entry.isDirectory) throw new StiefelError('E_ISO_NOT_FILE', `${this.#source.name}: ${entry.name} is a directory`);
    if (entry.size > options.maxBytes) throw new StiefelError('E_ISO_TOO_BIG', `${this.#source.name}: ${entry.name} is ${entry.size} bytes, more than the ${options.maxBytes} read here`);
    try {
      const parts: Buffer[] = [];
      for (const e of entry.extents) parts.push(await this.#readExtent(e.block, e.length, `the file ${entry.name}`));
      return Buffer.concat(parts);
    } catch (err) {
      throw named(this.#source.name, err);
    }
  }

  /** The El Torito boot images (none when the image has no boot record). */
  async bootImages(): Promise<BootImage[]> {
    if (this.bootCatalogBlock === null) return [];
    try {
      const start = this.bootCatalogBlock * this.#blockSize;
      const length = Math.min(this.#limits.maxCatalogSectors * ISO_SECTOR_SIZE, this.#source.size - start);
      if (length < 64) throw new IsoFormatError(`the El Torito boot catalog (block ${this.bootCatalogBlock}) lies beyond the end of the image`);
      return decodeBootCatalog(await readExactly(this.#source, start, length, 'the El Torito boot catalog'));
    } catch (err) {
      throw named(this.#source.name, err);
    }
  }

  /** Raw bytes of the image, checked against its end (for a boot image's first sector). */
  async readAt(offset: number, length: number, what: string): Promise<Buffer> {
    try {
      return await readExactly(this.#source, offset, length, what);
    } catch (err) {
      throw named(this.#source.name, err);
    }
  }
}

async function readExactly(source: IsoSource, offset: number, length: number, what: string): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > source.size) {
    throw new IsoFormatError(`${what} (bytes ${offset}-${offset + length}) lies beyond the end of the image (${source.size} bytes): it is truncated or corrupt`);
  }
  if (length === 0) return Buffer.alloc(0);
  const data = await source.read(offset, length);
  if (data.length < length) throw new IsoFormatError(`${what}: only ${data.length} of ${length} bytes could be read at byte ${offset}: the image is truncated`);
  return data.length === length ? data : data.subarray(0, length);
}
