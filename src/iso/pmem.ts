// Keeping a downloaded ISO in RAM across kexec, webboot's way: a region of
// RAM that the kernel is told, by `memmap=SIZE!START`, to treat as
// persistent memory (the legacy e820 type 12). Linux then leaves it alone
// and shows it as the block device /dev/pmem0 (nd_e820, nd_pmem); the
// next kernel, given the same parameter, finds the same bytes there. So
// stiefelOS restarts itself with the region set aside (the size of the
// ISO, rounded up), downloads the ISO into /dev/pmem0, and kexecs the ISO's
// kernel with the same memmap=: the ISO's initramfs sees a block device
// holding the ISO, as if it were a CD. Pure: the region, the parameters,
// what the restarted stiefelOS is asked to do.
import { StiefelError } from '../errors';

const MIB = 1024 * 1024;
/** Where the region starts and how its size is rounded: the kernel's memory section size on x86-64. */
export const PMEM_ALIGN = 128 * MIB;
/** RAM that must stay outside the region: stiefelOS (node, the download's buffers), then the ISO's own system. */
export const PMEM_MIN_REST = 768 * MIB;

export interface RamRange {
  start: number;
  /** Inclusive, as /proc/iomem writes it. */
  end: number;
}

export interface PmemRegion {
  start: number;
  size: number;
}

/** The top-level "System RAM" ranges of /proc/iomem (read as root: others see zeros). */
export function parseIomemRam(text: string): RamRange[] {
  const out: RamRange[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) : System RAM$/i.exec(line);
    if (!m) continue;
    const start = Number.parseInt(m[1]!, 16);
    const end = Number.parseInt(m[2]!, 16);
    if (end > start) out.push({ start, end });
  }
  return out;
}

const alignDown = (n: number, a: number): number => Math.floor(n / a) * a;
const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * A region for an ISO of `bytes`: the size rounded up to PMEM_ALIGN, at the
 * top of the highest RAM range that holds it (kexec's file-based load puts
 * the next kernel low, from 16 MiB up, so the two stay apart), with at least
 * PMEM_MIN_REST of RAM left beside it.
 */
export function choosePmemRegion(ram: readonly RamRange[], bytes: number): PmemRegion {
  if (ram.length === 0) throw new StiefelError('E_ISO_RAM', 'no System RAM in /proc/iomem (not root?): cannot set RAM aside for the ISO');
  const size = alignUp(Math.max(bytes, 1), PMEM_ALIGN);
  const total = ram.reduce((n, r) => n + (r.end + 1 - r.start), 0);
  const mib = (n: number): string => `${Math.round(n / MIB)} MiB`;
  if (total - size < PMEM_MIN_REST) {
    throw new StiefelError('E_ISO_TOO_BIG', `the ISO needs ${mib(size)} of RAM kept aside and this machine has ${mib(total)}; ${mib(PMEM_MIN_REST)} must stay free: use a machine with more RAM, or copy the ISO to a USB disk and boot it from there (menu item f)`);
  }
  for (const r of [...ram].sort((a, b) => b.start - a.start)) {
    const start = alignDown(r.end + 1 - size, PMEM_ALIGN);
    if (start >= r.start && start >= PMEM_ALIGN) return { start, size };
  }
  throw new StiefelError('E_ISO_TOO_BIG', `no single range of RAM holds ${mib(size)} for the ISO (the largest is ${mib(Math.max(...ram.map((r) => r.end + 1 - r.start)))}): copy the ISO to a USB disk and boot it from there (menu item f)`);
}

/** `memmap=SIZE!START` in MiB (both are multiples of PMEM_ALIGN). */
export function memmapParameter(region: PmemRegion): string {
  return `memmap=${region.size / MIB}M!${region.start / MIB}M`;
}

/** The region a memmap= word names, when it is one of ours (MiB units, `!`). */
export function parseMemmapParameter(word: string): PmemRegion | undefined {
  const m = /^memmap=(\d+)M!(\d+)M$/.exec(word);
  if (!m) return undefined;
  return { size: Number(m[1]) * MIB, start: Number(m[2]) * MIB };
}

/** What the restarted stiefelOS is to do: download this ISO into the region and boot this entry. */
export interface PendingIsoBoot {
  url: string;
  sha256?: string;
  entry: number;
  region: PmemRegion;
}

const PENDING_KEYS = ['stiefel.iso', 'stiefel.iso.sha256', 'stiefel.iso.entry'] as const;

/**
 * The restart's command line: this one's, less what belongs to this boot
 * (the boot loader's BOOT_IMAGE= and initrd=, an older request), plus the
 * region and the request. The URL is percent-encoded: no blank or quote
 * reaches the kernel's parser.
 */
export function restartCmdline(current: string, p: PendingIsoBoot): string {
  const keep = current.split(/\s+/).filter((w) => w && !/^(BOOT_IMAGE|initrd|memmap)=/.test(w) && !PENDING_KEYS.some((k) => w.startsWith(`${k}=`)));
  const words = [...keep, memmapParameter(p.region), `stiefel.iso=${encodeURIComponent(p.url)}`, `stiefel.iso.entry=${p.entry}`];
  if (p.sha256) words.push(`stiefel.iso.sha256=${p.sha256}`);
  const line = words.join(' ');
  // x86's COMMAND_LINE_SIZE.
  if (line.length > 2047) throw new StiefelError('E_ISO_URL', `the URL is too long to pass to the restarted stiefelOS (${p.url.length} characters): use a shorter one`);
  return line;
}

/** The request a restart carries on its command line, when there is one (and its region is set aside). */
export function pendingIsoBoot(cmdline: string): PendingIsoBoot | undefined {
  const words = cmdline.split(/\s+/);
  const value = (k: string): string | undefined => words.find((w) => w.startsWith(`${k}=`))?.slice(k.length + 1);
  const url = value('stiefel.iso');
  const entry = Number(value('stiefel.iso.entry'));
  const regions = words.map(parseMemmapParameter).filter((r): r is PmemRegion => r !== undefined);
  if (url === undefined || !Number.isInteger(entry) || entry < 1 || regions.length !== 1) return undefined;
  let decoded: string;
  try {
    decoded = decodeURIComponent(url);
  } catch {
    return undefined;
  }
  const sha256 = value('stiefel.iso.sha256');
  return { url: decoded, entry, region: regions[0]!, ...(sha256 && /^[0-9a-f]{64}$/.test(sha256) ? { sha256 } : {}) };
}
