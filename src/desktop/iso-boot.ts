// Booting a distribution's ISO on the desktop (webboot's way), from a URL
// or a file: the ISO comes into RAM (downloaded and checked, or read where
// it is), its boot menu is read, and the chosen entry's kernel and initrd
// are kexec'd with its command line. Nothing is booted unless the image
// was checked (the SHA-256 when one is given, always for http:) and the
// entry's files were all found.
//
// What boots: ISOs whose kernel and initrd need nothing more once they run
// (installers and rescue systems that load whole into RAM, such as
// Debian's netboot mini.iso), from anywhere; and live systems whose
// initramfs looks for the ISO again after the kernel starts (Debian live,
// Ubuntu casper, Arch, Fedora live) when the ISO is a file on a disk: their
// initramfs is told its path there (findiso=, iso-scan/filename=, ...).
// A downloaded live ISO boots from RAM set aside across kexec (/dev/pmem0,
// webboot's way: src/desktop/iso-pmem.ts); one in a tmpfs is refused with
// the reason.
import { promises as fs } from 'node:fs';
import { posix } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { Kexec } from '../kexec/kexec';
import { openIsoFile } from '../iso/file-source';
import { inspectIso, requireEntries, type IsoBootEntry, type IsoInspection } from '../iso/inspect';
import { IsoImage } from '../iso/reader';
import { distroRule, isoBootParameters, liveRule, withIsoParameters } from '../iso/distro';
import type { IsoLocation } from '../iso/iso-on-disk';
import { memmapParameter, type PmemRegion } from '../iso/pmem';
import { initrdPadding } from '../cpio/newc';
import { readBzImageInfo } from '../image/bzimage';
import { PMEM_INIT } from './iso-pmem';

export interface IsoBootOptions {
  /** The ISO, in RAM or on a mounted disk. */
  iso: string;
  /** How messages call it (the file name of a download); the ISO's own name by default. */
  name?: string;
  /** 1-based, as `iso inspect` numbers them; the menu's default when omitted. */
  entry?: number;
  /** Words for the booted kernel's command line: the consoles stiefelOS runs on. */
  consoles: string;
  /** Where the kernel and initrd are written before kexec (a tmpfs). */
  workDir: string;
  /** With outDir, nothing is kexec'd: vmlinuz, initrd.img and cmdline are written there. */
  outDir?: string;
  kexec: Kexec;
  /** Largest kernel or initrd read from the ISO. */
  maxFileBytes?: number;
  /** Where the booted kernel's initramfs can find the ISO file again (a file on a disk), or why it cannot. */
  location?: IsoLocation;
  /**
   * The ISO is in RAM set aside across kexec (/dev/pmem0): a live entry's
   * kernel gets the same memmap= and, from `initrd`, the modules to see it
   * (a cpio archive, empty when its kernel has them built in).
   */
  pmem?: { region: PmemRegion; initrd(entry: IsoBootEntry, release: string): Promise<Buffer> };
}

export interface IsoBootResult {
  inspection: IsoInspection;
  entry: IsoBootEntry;
  cmdline: string;
  written?: { kernel: string; initrd: string; cmdline: string };
}

/** The entry to boot: the one asked for, else the first default, else the first. */
export function chooseEntry(entries: readonly IsoBootEntry[], wanted: number | undefined, file: string): IsoBootEntry {
  if (wanted !== undefined) {
    const e = entries.find((x) => x.number === wanted);
    if (!e) throw new StiefelError('E_ISO_ENTRY', `${file} has no entry ${wanted} (it has 1 to ${entries.length}; 'stiefelctl iso inspect ${file}' lists them)`);
    return e;
  }
  return entries.find((e) => e.default && e.kernelExists) ?? entries.find((e) => e.kernelExists) ?? entries[0]!;
}

/**
 * Refuses what cannot boot this way, with the reason and what to use
 * instead; returns the parameters that tell a live entry's initramfs where
 * the ISO file is (none for entries that load whole into RAM).
 */
export function checkBootable(entry: IsoBootEntry, file: string, location?: IsoLocation, keptInRam = false): string[] {
  if (!entry.kernelExists) throw new StiefelError('E_ISO_ENTRY', `entry ${entry.number} of ${file} names the kernel ${entry.kernel}, which is not on the ISO`);
  if (entry.initrds.length === 0) throw new StiefelError('E_ISO_ENTRY', `entry ${entry.number} of ${file} has no initrd; booting a kernel alone is not supported`);
  const missing = entry.initrds.filter((i) => !i.exists).map((i) => i.path);
  if (missing.length) throw new StiefelError('E_ISO_ENTRY', `entry ${entry.number} of ${file} names the initrd ${missing.join(', ')}, which is not on the ISO`);
  const rule = liveRule(entry.distro);
  if (!rule) return [];
  // On /dev/pmem0 the ISO is a block device of its own, found as a CD would be.
  if (keptInRam) return [];
  if (location?.found) return isoBootParameters(entry.distro, location.path, { device: location.byId ?? location.device });
  throw new StiefelError(
    'E_ISO_LIVE',
    `entry ${entry.number} of ${file} is ${rule.name}: its initramfs (${rule.finder}) looks for the ISO file again once the kernel runs, ${location ? `and ${location.why}` : 'and this ISO is not a file on a disk'}; copy the ISO to a USB disk and boot it from there (menu item f), or boot it by URL in stiefelOS from a server that answers byte ranges (it then stays in RAM across kexec)`,
  );
}

/**
 * A command line with the ISO menu's own words, its consoles replaced by
 * ours. A console named twice is kept once, at its last place: the last
 * console= is the one /dev/console (and the ISO's init) uses.
 */
export function isoCmdline(entryCmdline: string, consoles: string): string {
  const words = entryCmdline.split(/\s+/).filter((w) => w && !/^(console|initrd|BOOT_IMAGE)=/.test(w));
  const ours = consoles.split(/\s+/).filter(Boolean);
  return [...words, ...ours.filter((w, i) => ours.lastIndexOf(w) === i)].join(' ');
}

export async function bootIso(o: IsoBootOptions, ctx: { log: Logger; signal?: AbortSignal }): Promise<IsoBootResult> {
  const { log } = ctx;
  const source = await openIsoFile(o.iso);
  const maxFileBytes = o.maxFileBytes ?? 2 * 1024 ** 3;
  try {
    const inspection = await inspectIso(source);
    const entries = requireEntries(inspection);
    const entry = chooseEntry(entries, o.entry, o.iso);
    const finder = checkBootable(entry, o.iso, o.location, o.pmem !== undefined);
    let cmdline = withIsoParameters(isoCmdline(entry.cmdline, o.consoles), finder);
    log.info(`booting entry ${entry.number} of ${o.name ?? posix.basename(o.iso)}: ${entry.title} (${inspection.distro.name})`);
    if (finder.length && o.location?.found) log.info(`its initramfs (${distroRule(entry.distro)!.finder}) finds the ISO again as ${o.location.path} on ${o.location.device}: ${finder.join(' ')}`);

    // The kernel and the initrds, concatenated (the kernel unpacks them in order).
    const iso = await IsoImage.open(source);
    const read = async (path: string): Promise<Buffer> => {
      const e = await iso.lookup(path);
      if (!e) throw new StiefelError('E_ISO_ENTRY', `${path} vanished from ${o.iso}`);
      return iso.readFile(e, { maxBytes: maxFileBytes });
    };
    const dir = o.outDir ?? (await fs.mkdtemp(posix.join(o.workDir, 'stiefel-iso-')));
    if (o.outDir) await fs.mkdir(dir, { recursive: true });
    const paths = { kernel: posix.join(dir, 'vmlinuz'), initrd: posix.join(dir, 'initrd.img'), cmdline: posix.join(dir, 'cmdline') };
    const partial = (p: string): string => `${p}.partial`;
    try {
      const kernel = await read(entry.kernel);
      await fs.writeFile(partial(paths.kernel), kernel);
      const fh = await fs.open(partial(paths.initrd), 'w');
      try {
        let size = 0;
        for (const i of entry.initrds) size += (await fh.write(await read(i.path))).bytesWritten;
        if (o.pmem && liveRule(entry.distro)) {
          // The kernel needs the same region set aside, and the modules to see it.
          let release: string;
          try {
            release = readBzImageInfo(kernel.subarray(0, 65536)).release;
          } catch (err) {
            throw new StiefelError('E_ISO_ENTRY', `${entry.kernel} on ${o.iso} is not an x86 kernel stiefelOS can read the release of: ${(err as Error).message}`, { cause: err });
          }
          const extra = await o.pmem.initrd(entry, release);
          if (extra.length) {
            await fh.write(Buffer.concat([initrdPadding(size), extra]));
            cmdline = `${cmdline} rdinit=${PMEM_INIT}`;
          }
          cmdline = `${cmdline} ${memmapParameter(o.pmem.region)}`;
        }
      } finally {
        await fh.close();
      }
      await fs.writeFile(partial(paths.cmdline), `${cmdline}\n`);
      for (const p of Object.values(paths)) await fs.rename(partial(p), p);
    } catch (err) {
      for (const p of Object.values(paths)) await fs.rm(partial(p), { force: true });
      if (!o.outDir) await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
    if (o.outDir) {
      log.info(`wrote ${paths.kernel}, ${paths.initrd} and ${paths.cmdline}`);
      return { inspection, entry, cmdline, written: paths };
    }
    log.info('loading its kernel (kexec)');
    await o.kexec.load({ kernel: paths.kernel, initrd: paths.initrd, cmdline }, ctx);
    log.info(`starting ${entry.title}`);
    await o.kexec.exec(ctx);
    return { inspection, entry, cmdline };
  } finally {
    await source.close();
  }
}
