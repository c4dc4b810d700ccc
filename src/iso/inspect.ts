// What an ISO boots: its volume, El Torito boot images, boot menu entries and
// the distribution, with the kernel parameters that distribution needs to
// find the ISO again after kexec. Reads through an IsoSource only.
import { StiefelError } from '../errors';
import { DISTRO_PATHS, distroRule, entryDistro, recognizeDistro, type IsoDistro, type IsoDistroId } from './distro';
import type { BootImage } from './el-torito';
import { IsoFileCache, readIsoMenus, type IsoMenu } from './menus';
import { IsoImage, type IsoLimits, type IsoNames, type IsoSource, type IsoVolume } from './reader';

export interface IsoBootImage extends BootImage {
  /** The file on the ISO that is the image, when one is (an ESP image may be hidden, outside the tree). */
  path: string | null;
  /** Bytes: the file's size, else (for a FAT ESP image) its file system's size, else sector count x 512. */
  size: number;
}

export interface IsoBootEntry {
  /** 1-based, as printed. */
  number: number;
  menu: IsoMenu;
  /** The config file the entry is defined in (or included from). */
  config: string;
  id: string;
  title: string;
  kernel: string;
  kernelExists: boolean;
  initrds: { path: string; exists: boolean }[];
  cmdline: string;
  /** The default entry of its menu. */
  default: boolean;
  /** Which distribution's way of finding the ISO this entry's initramfs uses. */
  distro: IsoDistroId;
}

export interface IsoInspection {
  file: string;
  size: number;
  volume: IsoVolume;
  names: IsoNames;
  distro: IsoDistro & { parameters: readonly string[] };
  bootImages: IsoBootImage[];
  menus: { menu: IsoMenu; path: string }[];
  entries: IsoBootEntry[];
  skipped: { menu: IsoMenu; what: string; reason: string }[];
  notes: string[];
}

/** Where El Torito images usually sit, to name the file that holds one. */
const BOOT_IMAGE_DIRS = ['/', '/isolinux', '/boot/isolinux', '/syslinux', '/boot/syslinux', '/boot', '/boot/grub', '/boot/grub/i386-pc', '/EFI', '/EFI/BOOT', '/efi', '/efi/boot', '/images'];

/** A FAT boot sector's file system size (BPB_BytsPerSec x BPB_TotSec16/32), for an ESP image the catalog sizes badly. */
export function fatImageBytes(sector: Buffer): number | null {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) return null;
  const bytesPerSector = sector.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) return null;
  const total = sector.readUInt16LE(19) || sector.readUInt32LE(32);
  return total > 0 ? total * bytesPerSector : null;
}

async function describeBootImages(iso: IsoImage): Promise<IsoBootImage[]> {
  const images = await iso.bootImages();
  if (images.length === 0) return [];
  const byBlock = new Map<number, { path: string; size: number }>();
  for (const dir of BOOT_IMAGE_DIRS) {
    for (const e of (await iso.list(dir)) ?? []) {
      if (!e.isDirectory && e.extents[0]) byBlock.set(e.extents[0].block, { path: `${dir === '/' ? '' : dir}/${e.name}`, size: e.size });
    }
  }
  const out: IsoBootImage[] = [];
  for (const img of images) {
    const file = byBlock.get(img.loadBlock) ?? null;
    let size = file?.size ?? img.sectorCount * 512;
    if (!file && img.platform === 'uefi') {
      const at = img.loadBlock * iso.volume.blockSize;
      if (at + 512 <= iso.source.size) size = fatImageBytes(await iso.readAt(at, 512, 'the EFI boot image')) ?? size;
    }
    out.push({ ...img, path: file?.path ?? null, size });
  }
  return out;
}

async function readDiskInfo(iso: IsoImage): Promise<string | null> {
  const e = await iso.lookup('/.disk/info');
  if (!e || e.isDirectory || e.size > 4096) return null;
  const text = (await iso.readFile(e, { maxBytes: 4096 })).toString('utf8').replace(/\0/g, '').trim();
  return text.split('\n')[0]?.trim() || null;
}

/** Reads the ISO and reports what it boots. A malformed image is one StiefelError. */
export async function inspectIso(source: IsoSource, options: { limits?: Partial<IsoLimits> } = {}): Promise<IsoInspection> {
  const iso = await IsoImage.open(source, options);
  const bootImages = await describeBootImages(iso);
  const platform = bootImages.some((b) => b.platform === 'uefi') ? 'efi' : 'pc';
  const cache = new IsoFileCache(iso);
  const menus = await readIsoMenus(iso, { platform, cache });

  const existing = new Set<string>();
  for (const p of DISTRO_PATHS) if (await iso.lookup(p)) existing.add(p);
  const distro = recognizeDistro({ label: iso.volume.label, existing, cmdlines: menus.candidates.map((c) => c.candidate.cmdline ?? ''), diskInfo: await readDiskInfo(iso) });

  const exists = async (path: string): Promise<boolean> => {
    const e = await iso.lookup(path);
    return e !== null && !e.isDirectory;
  };
  const entries: IsoBootEntry[] = [];
  for (const { menu, config, candidate: c } of menus.candidates) {
    const cmdline = c.cmdline ?? '';
    entries.push({
      number: entries.length + 1,
      menu,
      config,
      id: c.id,
      title: c.title,
      kernel: c.kernel.path,
      kernelExists: await exists(c.kernel.path),
      initrds: await Promise.all(c.initrds.map(async (i) => ({ path: i.path, exists: await exists(i.path) }))),
      cmdline,
      default: c.isDefault,
      distro: entryDistro(c.kernel.path, cmdline, distro.id),
    });
  }
  return {
    file: source.name,
    size: source.size,
    volume: iso.volume,
    names: iso.names,
    distro: { ...distro, parameters: distroRule(distro.id)?.parameters ?? [] },
    bootImages,
    menus: menus.configs,
    entries,
    skipped: menus.skipped,
    notes: menus.notes,
  };
}

/** The inspection's entries, or the one error that says why there are none (for commands that boot one). */
export function requireEntries(r: IsoInspection): IsoBootEntry[] {
  if (r.menus.length === 0) {
    throw new StiefelError('E_ISO_NO_MENU', `${r.file} has no boot menu (no isolinux.cfg, syslinux.cfg or grub.cfg where isolinux and GRUB look)`);
  }
  if (r.entries.length === 0) {
    const first = r.skipped[0];
    throw new StiefelError('E_ISO_NO_ENTRY', `${r.file}: its boot menus (${r.menus.map((m) => m.path).join(', ')}) offer no Linux entry${first ? `; e.g. ${first.what}: ${first.reason}` : ''}`);
  }
  return r.entries;
}

