// What TARGET is (an image file to create, or a whole disk), what the disk
// holds now, and whether anything on it is in use. Reading the system
// (stat, sysfs, lsblk, /proc/swaps) is kept apart from the pure decisions,
// which the unit tests feed by hand.
import { open, readFile, realpath, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { PROBE_BYTES, probeFilesystem, type FsKind } from '../disk/fs-probe';
import { readPartitionTable } from '../disk/partition-table';
import type { CommandRunner } from '../disk/runner';
import { StiefelError, UsageError, errnoCode } from '../errors';
import { formatBytes } from '../progress';
import { formatMiB } from './layout';

export type Target =
  | { kind: 'image'; path: string; existingBytes: number | undefined }
  | {
      kind: 'disk';
      /** As the user gave it (e.g. /dev/disk/by-id/usb-...). */
      path: string;
      /** /dev/NAME. */
      device: string;
      name: string;
      bytes: number;
      logicalBlockSize: number;
      readOnly: boolean;
    };

export interface SysfsBlock {
  /** /sys/class/block/NAME/partition exists: partition number. */
  partition: number | undefined;
  /** The disk a partition belongs to. */
  parent: string | undefined;
  /** dm/name for device-mapper devices. */
  dmName: string | undefined;
  sizeSectors: number;
  logicalBlockSize: number;
  readOnly: boolean;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

export async function readSysfsBlock(name: string, sysfs = '/sys'): Promise<SysfsBlock> {
  const dir = posix.join(sysfs, 'class/block', name);
  const partition = await readText(posix.join(dir, 'partition'));
  let parent: string | undefined;
  if (partition !== undefined) parent = posix.basename(posix.dirname(await realpath(dir)));
  return {
    partition: partition === undefined ? undefined : Number(partition),
    parent,
    dmName: await readText(posix.join(dir, 'dm/name')),
    sizeSectors: Number((await readText(posix.join(dir, 'size'))) ?? '0'),
    logicalBlockSize: Number((await readText(posix.join(dir, 'queue/logical_block_size'))) ?? (await readText(posix.join(sysfs, 'class/block', parent ?? name, 'queue/logical_block_size'))) ?? '512'),
    readOnly: (await readText(posix.join(dir, 'ro'))) === '1',
  };
}

/** Classifies TARGET; refuses partitions, device-mapper volumes, directories and other files with the fix. */
export async function resolveTarget(path: string, options: { sysfs?: string } = {}): Promise<Target> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw new StiefelError('E_USB_TARGET', `cannot look at ${path}: ${(err as Error).message}`, { cause: err });
    if (path.startsWith('/dev/')) {
      throw new UsageError(`${path} does not exist: plug the stick in and look for its name with 'lsblk -d -o PATH,MODEL,SIZE,TRAN'`);
    }
    const dir = posix.dirname(path);
    const d = await stat(dir).catch(() => undefined);
    if (!d?.isDirectory()) throw new UsageError(`the directory ${dir} for the image file ${path} does not exist: create it first or choose another path`);
    return { kind: 'image', path, existingBytes: undefined };
  }
  if (st.isDirectory()) throw new UsageError(`${path} is a directory: give an image file name inside it (e.g. ${posix.join(path, 'stiefel-stick.img')}) or a whole disk such as /dev/sdX`);
  if (st.isFile()) return { kind: 'image', path, existingBytes: st.size };
  if (!st.isBlockDevice()) throw new UsageError(`${path} is neither a disk nor an image file: give a whole disk such as /dev/sdX, or an image file name`);
  const device = await realpath(path);
  const name = posix.basename(device);
  const sys = await readSysfsBlock(name, options.sysfs);
  if (sys.partition !== undefined) {
    throw new UsageError(`${path} is partition ${sys.partition} of /dev/${sys.parent}: give the whole disk, /dev/${sys.parent} (the stick gets a new partition table)`);
  }
  if (sys.dmName !== undefined) {
    throw new UsageError(`${path} is the device-mapper volume ${sys.dmName} (LVM, LUKS or similar), not a disk: give the stick itself, such as /dev/sdX`);
  }
  return { kind: 'disk', path, device, name, bytes: sys.sizeSectors * 512, logicalBlockSize: sys.logicalBlockSize, readOnly: sys.readOnly };
}

/** One node of `lsblk -J -b -o PATH,TYPE,SIZE,MODEL,VENDOR,TRAN,RM,HOTPLUG,FSTYPE,LABEL,MOUNTPOINTS`. */
export interface BlockNode {
  path: string;
  type: string;
  size: number;
  model: string | null;
  vendor: string | null;
  tran: string | null;
  rm: boolean;
  hotplug: boolean;
  fstype: string | null;
  label: string | null;
  mountpoints: string[];
  children: BlockNode[];
}

export const LSBLK_COLUMNS = 'PATH,TYPE,SIZE,MODEL,VENDOR,TRAN,RM,HOTPLUG,FSTYPE,LABEL,MOUNTPOINTS';

const str = (v: unknown): string | null => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);
const bool = (v: unknown): boolean => v === true || v === '1' || v === 1;

function node(raw: Record<string, unknown>): BlockNode {
  const mps = Array.isArray(raw.mountpoints) ? raw.mountpoints : raw.mountpoint !== undefined ? [raw.mountpoint] : [];
  return {
    path: String(raw.path ?? ''),
    type: String(raw.type ?? ''),
    size: Number(raw.size ?? 0),
    model: str(raw.model),
    vendor: str(raw.vendor),
    tran: str(raw.tran),
    rm: bool(raw.rm),
    hotplug: bool(raw.hotplug),
    fstype: str(raw.fstype),
    label: str(raw.label),
    mountpoints: mps.filter((m): m is string => typeof m === 'string' && m !== ''),
    children: Array.isArray(raw.children) ? (raw.children as Record<string, unknown>[]).map(node) : [],
  };
}

/** Decodes lsblk's JSON (util-linux 2.33 and later). */
export function parseLsblk(json: string): BlockNode[] {
  const doc = JSON.parse(json) as { blockdevices?: Record<string, unknown>[] };
  return (doc.blockdevices ?? []).map(node);
}

function walk(n: BlockNode, fn: (n: BlockNode, depth: number) => void, depth = 0): void {
  fn(n, depth);
  for (const c of n.children) walk(c, fn, depth + 1);
}

/**
 * Why writing this disk would destroy something in use, one reason per line
 * with its fix; empty when nothing is in use. `swaps` are the paths in
 * /proc/swaps.
 */
export function diskInUse(disk: BlockNode, swaps: readonly string[]): string[] {
  const reasons: string[] = [];
  walk(disk, (n, depth) => {
    for (const m of n.mountpoints) {
      if (m === '[SWAP]') continue;
      if (m === '/') reasons.push(`${n.path} holds the running system's root file system: choose another disk`);
      else reasons.push(`${n.path} is mounted on ${m}: unmount it first (umount ${m})`);
    }
    if (n.mountpoints.includes('[SWAP]') || swaps.includes(n.path)) reasons.push(`${n.path} is in use as swap: swapoff ${n.path} first`);
    if (depth === 0) return;
    if (n.type === 'crypt') reasons.push(`${n.path} is an open LUKS container on this disk: close it first (cryptsetup close ${posix.basename(n.path)})`);
    else if (n.type === 'lvm') reasons.push(`${n.path} is an active LVM volume on this disk: deactivate its volume group first (vgchange -an)`);
    else if (/^raid|^md$/.test(n.type)) reasons.push(`${n.path} is a running RAID array on this disk: stop it first (mdadm --stop ${n.path})`);
    else if (n.type === 'dm') reasons.push(`${n.path} is a device-mapper volume on this disk: remove it first (dmsetup remove ${posix.basename(n.path)})`);
  });
  return [...new Set(reasons)];
}

/** The disk's partitions as its own table says (the kernel may not have scanned it), with what each holds. */
export interface DiskContents {
  scheme: 'gpt' | 'mbr' | null;
  partitions: { number: number; size: number; kind: FsKind; label: string | null }[];
}

/** Reads the partition table and each partition's first bytes, read-only. */
export async function readDiskContents(device: string, bytes: number): Promise<DiskContents> {
  const fh = await open(device, 'r');
  try {
    const readAt = async (offset: number, length: number): Promise<Uint8Array> => {
      const n = Math.max(0, Math.min(length, bytes - offset));
      const b = Buffer.alloc(n);
      if (n > 0) await fh.read(b, 0, n, offset);
      return b;
    };
    const table = await readPartitionTable(readAt, bytes);
    if (!table) return { scheme: null, partitions: [] };
    const partitions = [];
    for (const p of table.partitions) {
      const probe = probeFilesystem(await readAt(p.offset, Math.min(PROBE_BYTES, p.size)));
      partitions.push({ number: p.number, size: p.size, kind: probe.kind, label: probe.label });
    }
    return { scheme: table.scheme, partitions };
  } finally {
    await fh.close();
  }
}

/** What the person is about to erase: the disk, then one line per partition. */
export function describeDisk(disk: BlockNode, contents?: DiskContents): string {
  const what = [disk.vendor, disk.model].filter(Boolean).join(' ') || 'no model name';
  const how = [disk.tran, disk.rm ? 'removable' : null, disk.hotplug && !disk.rm ? 'hot-pluggable' : null].filter(Boolean).join(', ');
  const lines = [`${disk.path}: ${what}, ${formatBytes(disk.size)} (${formatMiB(disk.size)})${how ? `, ${how}` : ''}`];
  if (contents && contents.scheme) {
    lines.push(`  ${contents.scheme === 'gpt' ? 'GPT' : 'MBR'} partition table, ${contents.partitions.length} partition(s)`);
    for (const p of contents.partitions) {
      const kind = p.kind === 'unknown' ? 'unknown contents' : p.kind;
      lines.push(`  partition ${p.number}  ${kind}${p.label ? ` '${p.label}'` : ''}  ${formatBytes(p.size)}`);
    }
    return lines.join('\n');
  }
  const parts = disk.children.filter((c) => c.type === 'part');
  if (parts.length === 0) lines.push(`  no partitions${disk.fstype ? `; holds ${disk.fstype}${disk.label ? ` '${disk.label}'` : ''} directly` : ''}`);
  for (const p of parts) {
    const fs = p.fstype ?? 'unknown contents';
    lines.push(`  ${p.path}  ${fs}${p.label ? ` '${p.label}'` : ''}  ${formatBytes(p.size)}${p.mountpoints.length ? `  mounted on ${p.mountpoints.join(', ')}` : ''}`);
  }
  return lines.join('\n');
}

/** Whether the disk looks like a USB stick or other removable medium (else the question says so). */
export function looksRemovable(disk: BlockNode): boolean {
  return disk.rm || disk.hotplug || disk.tran === 'usb' || disk.tran === 'mmc';
}

/** Asks lsblk about the disk; reads /proc/swaps. */
export async function inspectDisk(device: string, runner: CommandRunner): Promise<{ disk: BlockNode; swaps: string[] }> {
  const r = await runner.run('lsblk', ['-J', '-b', '-o', LSBLK_COLUMNS, device]);
  if (r.code !== 0) throw new StiefelError('E_USB_TARGET', `lsblk ${device} failed: ${r.stderr.trim().split('\n').pop() ?? ''}`);
  const [disk] = parseLsblk(r.stdout);
  if (!disk) throw new StiefelError('E_USB_TARGET', `lsblk does not know ${device}`);
  const swapsText = (await readText('/proc/swaps')) ?? '';
  const swaps = swapsText
    .split('\n')
    .slice(1)
    .map((l) => l.split(/\s+/)[0] ?? '')
    .filter(Boolean);
  return { disk, swaps };
}
