// The FAT32 boot sector (BIOS parameter block) that mkfs.fat writes and the
// syslinux installer patches, decoded to check what the tools made. Pure.
//
// Field offsets as in Microsoft's "FAT: General Overview of On-Disk Format"
// (BPB_BytsPerSec at 11 ... BS_FilSysType at 82), and its rule that the FAT
// type follows from the count of data clusters alone: FAT32 has 65525 or
// more. BPB_HiddSec is the count of sectors before the partition: boot code
// that reads the file system (syslinux's) adds it to every sector number, so
// a partition whose BPB_HiddSec is wrong boots on no BIOS.
import { FAT32_MIN_CLUSTERS } from './layout';

export interface FatBootSector {
  oemName: string;
  bytesPerSector: number;
  sectorsPerCluster: number;
  reservedSectors: number;
  fatCount: number;
  /** BPB_RootEntCnt: 0 on FAT32. */
  rootEntries: number;
  totalSectors: number;
  /** BPB_FATSz32 (BPB_FATSz16 when that is set). */
  fatSectors: number;
  hiddenSectors: number;
  rootCluster: number;
  fsInfoSector: number;
  backupBootSector: number;
  volumeId: number;
  volumeLabel: string;
  /** BS_FilSysType, informational only ("FAT32   "). */
  fsType: string;
  /** Data clusters, the count that decides the FAT type. */
  clusters: number;
  signature: boolean;
}

export function decodeFatBootSector(s: Uint8Array): FatBootSector | { problem: string } {
  if (s.length < 512) return { problem: 'the boot sector is short' };
  const b = Buffer.from(s.buffer, s.byteOffset, s.byteLength);
  const bytesPerSector = b.readUInt16LE(11);
  const sectorsPerCluster = b[13]!;
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) return { problem: `BPB_BytsPerSec is ${bytesPerSector}` };
  if (sectorsPerCluster === 0 || (sectorsPerCluster & (sectorsPerCluster - 1)) !== 0) return { problem: `BPB_SecPerClus is ${sectorsPerCluster}` };
  const reservedSectors = b.readUInt16LE(14);
  const fatCount = b[16]!;
  const rootEntries = b.readUInt16LE(17);
  const total16 = b.readUInt16LE(19);
  const fat16 = b.readUInt16LE(22);
  const totalSectors = total16 !== 0 ? total16 : b.readUInt32LE(32);
  const fatSectors = fat16 !== 0 ? fat16 : b.readUInt32LE(36);
  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const dataSectors = totalSectors - reservedSectors - fatCount * fatSectors - rootDirSectors;
  const fat32 = fat16 === 0;
  const at = fat32 ? 64 : 36; // BS_DrvNum: the extended boot record moves on FAT32
  return {
    oemName: b.toString('latin1', 3, 11),
    bytesPerSector,
    sectorsPerCluster,
    reservedSectors,
    fatCount,
    rootEntries,
    totalSectors,
    fatSectors,
    hiddenSectors: b.readUInt32LE(28),
    rootCluster: fat32 ? b.readUInt32LE(44) : 0,
    fsInfoSector: fat32 ? b.readUInt16LE(48) : 0,
    backupBootSector: fat32 ? b.readUInt16LE(50) : 0,
    volumeId: b[at + 2] === 0x29 ? b.readUInt32LE(at + 3) : 0,
    volumeLabel: b[at + 2] === 0x29 ? b.toString('latin1', at + 7, at + 18) : '',
    fsType: b[at + 2] === 0x29 ? b.toString('latin1', at + 18, at + 26) : '',
    clusters: dataSectors > 0 ? Math.floor(dataSectors / sectorsPerCluster) : 0,
    signature: b[510] === 0x55 && b[511] === 0xaa,
  };
}

export interface EspExpectation {
  /** The partition's first LBA. */
  hiddenSectors: number;
  /** The partition's size in 512-byte sectors. */
  totalSectors: number;
  volumeId: number;
  label: string;
}

/** What is wrong with an ESP's boot sector, for the partition it sits in; empty when all is right. */
export function espBootSectorProblems(sector: Uint8Array, want: EspExpectation): string[] {
  const d = decodeFatBootSector(sector);
  if ('problem' in d) return [d.problem];
  const problems: string[] = [];
  if (!d.signature) problems.push('no 0x55 0xAA signature');
  if (d.bytesPerSector !== 512) problems.push(`${d.bytesPerSector}-byte sectors, not 512`);
  if (d.clusters < FAT32_MIN_CLUSTERS || d.fatSectors === 0 || d.rootEntries !== 0) problems.push(`not FAT32 (${d.clusters} clusters)`);
  if (d.hiddenSectors !== want.hiddenSectors) problems.push(`BPB_HiddSec is ${d.hiddenSectors}, not the partition's first LBA ${want.hiddenSectors}`);
  if (d.totalSectors !== want.totalSectors) problems.push(`${d.totalSectors} sectors, not the partition's ${want.totalSectors}`);
  if (d.volumeId !== want.volumeId) problems.push(`volume ID ${d.volumeId.toString(16)}, not ${want.volumeId.toString(16)}`);
  if (d.volumeLabel.trimEnd() !== want.label) problems.push(`label '${d.volumeLabel.trimEnd()}', not '${want.label}'`);
  if (d.backupBootSector === 0 || d.backupBootSector >= d.reservedSectors) problems.push(`backup boot sector at ${d.backupBootSector}`);
  return problems;
}
