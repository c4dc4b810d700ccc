// The boot menus on an ISO, read with the boot-entries parsers (syslinux and
// grub). Those parsers are pure and read included files through synchronous
// callbacks; here the callbacks answer from a cache of files read from the
// ISO, and a parse that asked for a file not yet read is run again once it
// has been read: a few rounds, as deep as the includes go.
import { parseGrubConfig, type GrubRoot } from '../boot-entries/grub';
import { parseSyslinux } from '../boot-entries/syslinux';
import { normalizeBootPath, type Candidate, type ParseResult } from '../boot-entries/types';
import { StiefelError } from '../errors';
import { grubIsoUuid } from './iso9660';
import type { IsoEntry, IsoImage } from './reader';

export type IsoMenu = 'isolinux' | 'grub';

/** isolinux's own search (syslinux 6, core/fs/iso9660): these directories, each isolinux.cfg then syslinux.cfg; the first found is the menu. */
export const ISOLINUX_CONFIGS: readonly string[] = ['/boot/isolinux', '/isolinux', '/boot/syslinux', '/syslinux', ''].flatMap((d) => [`${d}/isolinux.cfg`, `${d}/syslinux.cfg`]);
/** GRUB's configs on distribution ISOs: BIOS and EFI grub (the EFI one often only sources the other). */
export const GRUB_CONFIGS: readonly string[] = ['/boot/grub/grub.cfg', '/boot/grub2/grub.cfg', '/EFI/BOOT/grub.cfg'];
/** Read only when no grub.cfg is there: the menu for booting the ISO as a file (GRUB's loopback convention). */
export const GRUB_LOOPBACK_CONFIG = '/boot/grub/loopback.cfg';

const TEXT_MAX = 1024 * 1024;
const MAX_FILES = 256;
const MAX_ROUNDS = 16;

export interface MenuCandidate {
  menu: IsoMenu;
  config: string;
  candidate: Candidate;
}

export interface MenuSkip {
  menu: IsoMenu;
  what: string;
  reason: string;
}

export interface IsoMenus {
  /** The config files the menus came from, in order. */
  configs: { menu: IsoMenu; path: string }[];
  candidates: MenuCandidate[];
  skipped: MenuSkip[];
  notes: string[];
}

/** Files and lookups of the ISO, answered synchronously from what was read so far; what was missing is noted for the next round. */
export class IsoFileCache {
  readonly #iso: IsoImage;
  readonly #entries = new Map<string, IsoEntry | null>();
  readonly #texts = new Map<string, string | null>();
  readonly #wantEntries = new Set<string>();
  readonly #wantTexts = new Set<string>();

  constructor(iso: IsoImage) {
    this.#iso = iso;
  }

  /** The entry at `path`: undefined when it has not been looked up yet. */
  entry(path: string): IsoEntry | null | undefined {
    const p = normalizeBootPath(path);
    if (this.#entries.has(p)) return this.#entries.get(p)!;
    this.#wantEntries.add(p);
    return undefined;
  }

  /** A small text file's contents: undefined when not read yet or not readable as text. */
  text(path: string): string | undefined {
    const p = normalizeBootPath(path);
    if (this.#texts.has(p)) return this.#texts.get(p) ?? undefined;
    this.#wantTexts.add(p);
    return undefined;
  }

  get wanting(): boolean {
    return this.#wantEntries.size > 0 || this.#wantTexts.size > 0;
  }

  /** Reads what the last round asked for. */
  async fill(): Promise<void> {
    for (const p of [...this.#wantEntries, ...this.#wantTexts]) {
      if (!this.#entries.has(p)) {
        if (this.#entries.size >= MAX_FILES * 4) throw new StiefelError('E_ISO_MENU', `${this.#iso.source.name}: its boot menus look at more than ${MAX_FILES * 4} files`);
        this.#entries.set(p, await this.#iso.lookup(p));
      }
    }
    for (const p of this.#wantTexts) {
      if (this.#texts.size >= MAX_FILES) throw new StiefelError('E_ISO_MENU', `${this.#iso.source.name}: its boot menus include more than ${MAX_FILES} files`);
      const e = this.#entries.get(p);
      let text: string | null = null;
      if (e && !e.isDirectory && e.size <= TEXT_MAX) text = (await this.#iso.readFile(e, { maxBytes: TEXT_MAX })).toString('utf8');
      this.#texts.set(p, text);
    }
    this.#wantEntries.clear();
    this.#wantTexts.clear();
  }

  /** Runs a pure parse until it asks for nothing that has not been read. */
  async settle<T>(parse: () => T): Promise<T> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = parse();
      if (!this.wanting) return r;
      await this.fill();
    }
    return parse();
  }
}

/** Whether a grub device spec names this ISO: its label, GRUB's UUID of it, or a file on it. */
function grubRootIsIso(iso: IsoImage, cache: IsoFileCache, root: GrubRoot): boolean | undefined {
  if (root.kind === 'config') return true;
  if (root.kind === 'label') return root.value === iso.volume.label;
  if (root.kind === 'fs-uuid') return root.value.toLowerCase() === grubIsoUuid(iso.volume.modifiedDigits);
  if (root.kind === 'file') {
    const e = cache.entry(root.value);
    return e === undefined ? undefined : e !== null;
  }
  // (cd0), (hd0,msdos2), ...: on a booted ISO these are the ISO itself or a partition of its hybrid image.
  return true;
}

function addResult(out: IsoMenus, menu: IsoMenu, config: string, r: ParseResult, iso: IsoImage, cache: IsoFileCache): void {
  out.notes.push(...r.notes);
  out.skipped.push(...r.skipped.map((s) => ({ menu, what: s.what, reason: s.reason })));
  for (const candidate of r.candidates) {
    if (candidate.root && grubRootIsIso(iso, cache, candidate.root) === false) {
      out.skipped.push({ menu, what: `${config}: "${candidate.title}"`, reason: `its files are on the file system with ${candidate.root.kind} ${candidate.root.value}, not on this ISO` });
      continue;
    }
    out.candidates.push({ menu, config, candidate });
  }
}

async function firstFile(cache: IsoFileCache, paths: readonly string[]): Promise<string | null> {
  return cache.settle(() => paths.find((p) => { const e = cache.entry(p); return e !== undefined && e !== null && !e.isDirectory; }) ?? null);
}

async function readSyslinux(iso: IsoImage, cache: IsoFileCache, out: IsoMenus): Promise<void> {
  const path = await firstFile(cache, ISOLINUX_CONFIGS);
  if (!path) return;
  out.configs.push({ menu: 'isolinux', path });
  const r = await cache.settle(() => parseSyslinux(cache.text(path) ?? '\0', { path, readFile: (p) => cache.text(p) }));
  addResult(out, 'isolinux', path, r, iso, cache);
}

async function readGrub(iso: IsoImage, cache: IsoFileCache, out: IsoMenus, platform: 'efi' | 'pc'): Promise<void> {
  const found: string[] = [];
  for (const p of GRUB_CONFIGS) {
    const f = await firstFile(cache, [p]);
    if (f) found.push(f);
  }
  if (found.length === 0) {
    const loop = await firstFile(cache, [GRUB_LOOPBACK_CONFIG]);
    if (loop) found.push(loop);
  }
  const seen = new Set<string>();
  for (const path of found) {
    out.configs.push({ menu: 'grub', path });
    const onIso = (root: GrubRoot) => grubRootIsIso(iso, cache, root);
    const r = await cache.settle(() =>
      parseGrubConfig(cache.text(path) ?? '\0', {
        prefix: path.slice(0, path.lastIndexOf('/')) || '/',
        what: path,
        platform,
        exists: (root, p, test) => {
          const is = onIso(root);
          if (is !== true) return undefined;
          const e = cache.entry(p);
          if (e === undefined) return undefined;
          if (test === 'd') return e !== null && e.isDirectory;
          if (test === 's') return e !== null && !e.isDirectory && e.size > 0;
          if (test === 'f') return e !== null && !e.isDirectory;
          return e !== null;
        },
        readFile: (root, p) => (onIso(root) === true ? cache.text(p) : undefined),
      }),
    );
    // An EFI grub.cfg that only sources the BIOS one gives the same entries again.
    r.candidates = r.candidates.filter((c) => {
      const key = JSON.stringify([c.title, c.kernel.path, c.initrds.map((i) => i.path), c.cmdline]);
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    addResult(out, 'grub', path, r, iso, cache);
  }
}

/** Every boot menu the ISO offers: isolinux's (BIOS), then GRUB's. `platform` is what GRUB's $grub_platform is taken to be. */
export async function readIsoMenus(iso: IsoImage, options: { platform: 'efi' | 'pc'; cache?: IsoFileCache }): Promise<IsoMenus> {
  const cache = options.cache ?? new IsoFileCache(iso);
  const out: IsoMenus = { configs: [], candidates: [], skipped: [], notes: [] };
  await readSyslinux(iso, cache, out);
  await readGrub(iso, cache, out, options.platform);
  return out;
}
