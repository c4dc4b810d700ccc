// The stick's size arithmetic. Pure.
//
//   LBA 0..33        protective MBR (gptmbr.bin), GPT header, entries
//   1 MiB ..         the ESP: FAT32, holding both boot loaders, the menu,
//                    stiefelOS's kernel and initrd
//   .. end           the backup GPT in the disk's last 33 sectors
//
// On an image file the disk ends 1 MiB after the ESP; on a device the disk
// is the whole device (the backup GPT belongs at its very end) and the ESP
// is as large as the files need plus a margin, or --size.
import { GPT_BACKUP_SECTORS, GPT_PRIMARY_SECTORS, SECTOR_SIZE } from './gpt';

export const MiB = 1024 * 1024;
/** The ESP starts at 1 MiB: aligned for every flash erase block and 4 KiB sector. */
export const ESP_FIRST_LBA = MiB / SECTOR_SIZE;
/** Room after the ESP on an image file; holds the backup GPT. */
export const TAIL_BYTES = MiB;
/** FAT32 needs at least 65525 clusters (Microsoft's FAT spec, "FAT type determination"). */
export const FAT32_MIN_CLUSTERS = 65525;
/** ...and at most 0x0FFFFFF5 - 2. */
export const FAT32_MAX_CLUSTERS = 0x0ffffff5 - 2;
export const FAT_RESERVED_SECTORS = 32;
export const FAT_COUNT = 2;
/** The smallest ESP made: FAT32 with 512-byte clusters needs about 33 MiB. */
export const MIN_ESP_BYTES = 40 * MiB;
/** ldlinux.sys and ldlinux.c32, written by the syslinux installer (about 60 + 120 KiB in syslinux 6). */
export const LDLINUX_SYS_ALLOWANCE = 256 * 1024;

export class StickSizeError extends Error {
  constructor(
    message: string,
    readonly neededBytes: number,
  ) {
    super(message);
  }
}

const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);
export const roundUp = (n: number, unit: number): number => ceilDiv(n, unit) * unit;

/** "100M", "1.5G", "2GiB", "512MB", "104857600": binary units (K = 1024), as dd and truncate read them. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?\s*$/i.exec(text);
  if (!m) return null;
  const unit = { K: 1024, M: MiB, G: 1024 * MiB, T: 1024 * 1024 * MiB }[(m[2] ?? '').toUpperCase() as 'K'] ?? 1;
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : null;
}

/** 94371840 -> "90 MiB"; 1.5 GiB -> "1.5 GiB". */
export function formatMiB(bytes: number): string {
  if (bytes >= 1024 * MiB) return `${(bytes / (1024 * MiB)).toFixed(1).replace(/\.0$/, '')} GiB`;
  return `${(bytes / MiB).toFixed(1).replace(/\.0$/, '')} MiB`;
}

/** Cluster size for an ESP of this size: 512 bytes below 512 MiB (FAT32 needs the cluster count), else 4 KiB. */
export function clusterBytesFor(espBytes: number): number {
  return espBytes < 512 * MiB ? 512 : 4096;
}

export interface FatGeometry {
  clusterBytes: number;
  /** Sectors of one FAT. */
  fatSectors: number;
  /** Clusters for data: a lower bound of what mkfs.fat makes. */
  clusters: number;
}

/**
 * FAT32 geometry of a volume of `bytes`, as mkfs.fat lays it out: reserved
 * sectors, two FATs of 4 bytes per cluster (+2 reserved entries), then
 * clusters, with up to one cluster lost to aligning the data area.
 */
export function fat32Geometry(bytes: number, clusterBytes = clusterBytesFor(bytes)): FatGeometry {
  const sectors = Math.floor(bytes / SECTOR_SIZE);
  const spc = clusterBytes / SECTOR_SIZE;
  const upperClusters = Math.floor((sectors - FAT_RESERVED_SECTORS) / spc);
  const fatSectors = ceilDiv((upperClusters + 2) * 4, SECTOR_SIZE);
  const dataSectors = sectors - FAT_RESERVED_SECTORS - FAT_COUNT * fatSectors - spc;
  return { clusterBytes, fatSectors, clusters: Math.max(0, Math.floor(dataSectors / spc)) };
}

export interface EspFile {
  /** Path on the ESP, '/'-separated, e.g. /EFI/BOOT/BOOTX64.EFI. */
  path: string;
  size: number;
}

/** Directory entries of one name: the 8.3 entry plus long-name entries of 13 characters each. */
function dirEntries(name: string): number {
  return 1 + ceilDiv(name.length, 13);
}

/** Clusters the files and their directories take on a FAT with clusters of `clusterBytes`. */
export function clustersNeeded(files: readonly EspFile[], clusterBytes: number): number {
  const dirs = new Map<string, number>([['', 0]]);
  let clusters = 0;
  for (const f of files) {
    const parts = f.path.split('/').filter(Boolean);
    let parent = '';
    for (let i = 0; i < parts.length; i++) {
      const here = `${parent}/${parts[i]}`;
      const isFile = i === parts.length - 1;
      if (isFile || !dirs.has(here)) dirs.set(parent, (dirs.get(parent) ?? 0) + dirEntries(parts[i]!));
      if (!isFile && !dirs.has(here)) dirs.set(here, 2); // '.' and '..'
      parent = here;
    }
    clusters += ceilDiv(f.size, clusterBytes);
  }
  for (const entries of dirs.values()) clusters += Math.max(1, ceilDiv(entries * 32, clusterBytes));
  return clusters;
}

/** Whether the files fit on a FAT32 volume of `espBytes` (with ldlinux.sys). */
export function filesFit(files: readonly EspFile[], espBytes: number): boolean {
  const g = fat32Geometry(espBytes);
  if (g.clusters < FAT32_MIN_CLUSTERS || g.clusters > FAT32_MAX_CLUSTERS) return false;
  const all = [...files, { path: '/syslinux/ldlinux.sys', size: LDLINUX_SYS_ALLOWANCE }];
  return clustersNeeded(all, g.clusterBytes) <= g.clusters;
}

/** The smallest whole-MiB ESP that holds the files (never below MIN_ESP_BYTES). */
export function minimumEspBytes(files: readonly EspFile[]): number {
  const payload = files.reduce((s, f) => s + f.size, 0) + LDLINUX_SYS_ALLOWANCE;
  let bytes = Math.max(MIN_ESP_BYTES, roundUp(payload, MiB));
  while (!filesFit(files, bytes)) bytes += MiB;
  return bytes;
}

/** What the files need plus a margin for a rebuilt, somewhat larger stiefelOS: 10% and 16 MiB. */
export function defaultEspBytes(files: readonly EspFile[]): number {
  const min = minimumEspBytes(files);
  return roundUp(min + Math.ceil(min / 10) + 16 * MiB, MiB);
}

export interface StickLayout {
  /** The whole disk: the image file's size, or the device's. */
  diskBytes: number;
  diskSectors: number;
  esp: { firstLba: number; lastLba: number; offset: number; bytes: number; clusterBytes: number };
  /** Where the stick's bytes end on a device: the rest up to the backup GPT stays unallocated. */
  usedBytes: number;
}

export interface PlanInput {
  files: readonly EspFile[];
  /** --size: the stick's size (image file) or the part of the device used. */
  requestedBytes?: number;
  /** The device's size; undefined for an image file. */
  deviceBytes?: number;
}

function layoutOf(diskBytes: number, espBytes: number): StickLayout {
  const firstLba = ESP_FIRST_LBA;
  const sectors = espBytes / SECTOR_SIZE;
  return {
    diskBytes,
    diskSectors: diskBytes / SECTOR_SIZE,
    esp: { firstLba, lastLba: firstLba + sectors - 1, offset: firstLba * SECTOR_SIZE, bytes: espBytes, clusterBytes: clusterBytesFor(espBytes) },
    usedBytes: firstLba * SECTOR_SIZE + espBytes,
  };
}

/** Lays the stick out, or throws StickSizeError saying what size would do. */
export function planStick(input: PlanInput): StickLayout {
  const min = minimumEspBytes(input.files);
  const minStick = ESP_FIRST_LBA * SECTOR_SIZE + min + TAIL_BYTES;
  const requested = input.requestedBytes;
  if (requested !== undefined) {
    const esp = Math.floor((requested - ESP_FIRST_LBA * SECTOR_SIZE - TAIL_BYTES) / MiB) * MiB;
    if (esp < min) {
      throw new StickSizeError(`--size ${formatMiB(requested)} is too small: the files need a stick of at least ${formatMiB(minStick)}`, minStick);
    }
    if (filesFit(input.files, esp) === false) {
      // A size whose cluster count falls outside FAT32's range: say the nearest that works.
      throw new StickSizeError(`--size ${formatMiB(requested)} cannot hold a FAT32 ESP for these files; try ${formatMiB(minStick)} or more`, minStick);
    }
    if (input.deviceBytes === undefined) return layoutOf(ESP_FIRST_LBA * SECTOR_SIZE + esp + TAIL_BYTES, esp);
    if (requested > input.deviceBytes) {
      throw new StickSizeError(`--size ${formatMiB(requested)} is larger than the device (${formatMiB(input.deviceBytes)}): give a smaller one or leave it out`, minStick);
    }
    return layoutOf(deviceDiskBytes(input.deviceBytes), esp);
  }
  const esp = defaultEspBytes(input.files);
  if (input.deviceBytes === undefined) return layoutOf(ESP_FIRST_LBA * SECTOR_SIZE + esp + TAIL_BYTES, esp);
  if (input.deviceBytes < minStick) {
    throw new StickSizeError(`the device holds ${formatMiB(input.deviceBytes)}; the stick needs at least ${formatMiB(minStick)}`, minStick);
  }
  // A small device gets what fits of the default, at least the minimum.
  const fits = Math.floor((deviceDiskBytes(input.deviceBytes) - ESP_FIRST_LBA * SECTOR_SIZE - TAIL_BYTES) / MiB) * MiB;
  return layoutOf(deviceDiskBytes(input.deviceBytes), Math.min(esp, fits));
}

/** A device's size in whole sectors (a trailing partial sector is not addressable). */
function deviceDiskBytes(deviceBytes: number): number {
  return Math.floor(deviceBytes / SECTOR_SIZE) * SECTOR_SIZE;
}

/** The sanity every layout must have (also what the property tests check). */
export function layoutProblems(l: StickLayout): string[] {
  const problems: string[] = [];
  if (l.diskBytes % SECTOR_SIZE !== 0) problems.push('the disk is not whole sectors');
  if (l.esp.firstLba < GPT_PRIMARY_SECTORS) problems.push('the ESP overlaps the primary GPT');
  if (l.esp.lastLba > l.diskSectors - 1 - GPT_BACKUP_SECTORS) problems.push('the ESP overlaps the backup GPT');
  if (l.esp.offset % MiB !== 0 || l.esp.bytes % MiB !== 0) problems.push('the ESP is not MiB-aligned');
  const g = fat32Geometry(l.esp.bytes);
  if (g.clusters < FAT32_MIN_CLUSTERS) problems.push('the ESP is too small for FAT32');
  return problems;
}
