// Walks mounted trees (partitions, or a directory the user named) the way
// the boot loaders would: runs every layout parser on the files it finds,
// resolves each candidate's kernel and initrds to real files, and picks the
// default. Reads only; never writes.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log';
import { silentLogger } from '../log';
import { compareBlsEntries, parseBlsEntry, parseLoaderConf, pickBlsDefault, type BlsSortable } from './bls';
import { parseGrubConfig, parseGrubEnv, type GrubRoot } from './grub';
import { findKernelPairs } from './kernel-pairs';
import { OVERRIDE_FILE, parseOverride } from './override';
import { decodePeHeader } from './pe';
import { parseSyslinux } from './syslinux';
import { SOURCE_ORDER, type BootEntrySource, type Candidate, type FileRef, type GrubRootSpec, type Skipped } from './types';
import { ukiCandidate, ukiTextSections } from './uki';

/** One mounted file system (or directory) to look in. */
export interface BootTree {
  /** Where it is readable on this machine. */
  dir: string;
  /** How it is named in the output: "/dev/sda2", "disk.img#2", or the directory. */
  partition: string;
  /** Partition number on its disk, when it is one. */
  number?: number;
  fsUuid?: string | null;
  fsLabel?: string | null;
  /** The GPT partition type says EFI System Partition. */
  isEsp?: boolean;
  /**
   * When `dir` is a sub-directory of its file system (a /boot directory on the
   * root file system): that directory's path inside the file system, e.g.
   * "/boot", so that paths written relative to the file system's root
   * ("/boot/vmlinuz-...") resolve.
   */
  subdir?: string;
}

export interface ResolvedFile {
  tree: BootTree;
  ref: FileRef;
  /** The file on this machine. */
  hostPath: string;
  /** The byte range to serve (a whole file, or a UKI section). */
  offset: number;
  length: number;
}

export interface BootEntry {
  id: string;
  title: string;
  version: string | null;
  /** Path inside the partition; for a UKI "/EFI/Linux/x.efi:.linux". */
  kernel: string;
  initrds: string[];
  cmdline: string | null;
  source: BootEntrySource;
  partition: string;
  default: boolean;
  files: { kernel: ResolvedFile; initrds: ResolvedFile[] };
}

export interface SkippedItem extends Skipped {
  partition: string;
}

export interface LayoutReport {
  source: BootEntrySource;
  /** What was looked at and what came of it, one line. */
  summary: string;
  usable: number;
}

export interface Discovery {
  entries: BootEntry[];
  skipped: SkippedItem[];
  notes: string[];
  layouts: LayoutReport[];
}

export interface DiscoverOptions {
  /** Command line for layouts that do not carry one (kernel pairs), from the config. */
  cmdline?: string | null;
  /** 'efi' or 'pc' when the caller knows how the laptop boots ($grub_platform). */
  platform?: 'efi' | 'pc';
  /** BLS architecture name of the machine booting the entries (default x64). */
  architecture?: string;
  log?: Logger;
  signal?: AbortSignal;
}

const TEXT_MAX = 1024 * 1024;
const PE_HEADER_BYTES = 64 * 1024;

/** The host path of `path` (inside the tree's file system) if it is a regular file. */
function locate(tree: BootTree, path: string): { hostPath: string; size: number } | null {
  const tries = [path];
  if (tree.subdir && path.startsWith(`${tree.subdir}/`)) tries.unshift(path.slice(tree.subdir.length));
  for (const p of tries) {
    const hostPath = join(tree.dir, p);
    try {
      const st = statSync(hostPath);
      if (st.isFile()) return { hostPath, size: st.size };
    } catch {
      // try the next spelling
    }
  }
  return null;
}

function isDir(tree: BootTree, path: string): string | null {
  const tries = [path];
  if (tree.subdir && path.startsWith(`${tree.subdir}/`)) tries.unshift(path.slice(tree.subdir.length));
  for (const p of tries) {
    const hostPath = join(tree.dir, p);
    try {
      if (statSync(hostPath).isDirectory()) return hostPath;
    } catch {
      // next
    }
  }
  return null;
}

async function readText(hostPath: string): Promise<string | null> {
  try {
    const st = await stat(hostPath);
    if (!st.isFile() || st.size > TEXT_MAX) return null;
    return await readFile(hostPath, 'utf8');
  } catch {
    return null;
  }
}

async function readRange(hostPath: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(hostPath, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function listDir(hostPath: string): Promise<string[]> {
  try {
    return (await readdir(hostPath)).sort();
  } catch {
    return [];
  }
}

interface Found {
  candidate: Candidate;
  tree: BootTree;
  /** For BLS/UKI ordering. */
  sortable?: BlsSortable;
  /** Position in the layout's own order. */
  order: number;
}

/** Finds the trees a grub `search`/`set root` named. */
function treesFor(spec: GrubRootSpec, configTree: BootTree, trees: readonly BootTree[]): { tree: BootTree | null; note: string | null } {
  const lc = (s: string | null | undefined) => (s ?? '').toLowerCase();
  if (spec.kind === 'fs-uuid') {
    const t = trees.find((x) => lc(x.fsUuid) === lc(spec.value));
    if (t) return { tree: t, note: null };
    if (configTree.fsUuid == null) return { tree: configTree, note: `cannot check that ${configTree.partition} has file system UUID ${spec.value} (it is a directory); looked there` };
    return { tree: null, note: null };
  }
  if (spec.kind === 'label') {
    const t = trees.find((x) => x.fsLabel === spec.value);
    if (t) return { tree: t, note: null };
    if (configTree.fsLabel == null && configTree.fsUuid == null) return { tree: configTree, note: `cannot check the label of ${configTree.partition}; looked there` };
    return { tree: null, note: null };
  }
  if (spec.kind === 'file') {
    const t = trees.find((x) => locate(x, spec.value)) ?? null;
    return { tree: t, note: null };
  }
  // (hdN,gptM) / (hdN,msdosM): partition M of the disk; we only ever see one disk.
  const m = /(?:gpt|msdos)?(\d+)\s*$/.exec(spec.value.split(',').pop() ?? '');
  const num = m ? Number(m[1]) : NaN;
  const t = trees.find((x) => x.number === num);
  if (t) return { tree: t, note: `took grub device (${spec.value}) to be partition ${num} of this disk` };
  return { tree: configTree, note: `grub device (${spec.value}) is not resolved; looked on ${configTree.partition}` };
}

export async function discoverBootEntries(trees: readonly BootTree[], options: DiscoverOptions = {}): Promise<Discovery> {
  const log = options.log ?? silentLogger;
  const notes: string[] = [];
  const skipped: SkippedItem[] = [];
  const found = new Map<BootEntrySource, Found[]>(SOURCE_ORDER.map((s) => [s, []]));
  const seen = new Map<BootEntrySource, string[]>(SOURCE_ORDER.map((s) => [s, []]));
  const arch = options.architecture ?? 'x64';
  const checkAbort = () => {
    if (options.signal?.aborted) throw options.signal.reason instanceof Error ? options.signal.reason : new Error('aborted');
  };
  const addSkips = (tree: BootTree, list: Skipped[]) => skipped.push(...list.map((s) => ({ ...s, partition: tree.partition })));
  let loaderDefault: string | null = null;
  let grubBlsDefault: string | null = null;
  let grubUsesBlscfg = false;

  for (const tree of trees) {
    checkAbort();
    log.debug(`looking in ${tree.partition} (${tree.dir})`);
    // grub environment blocks (Fedora's $kernelopts, saved_entry).
    let grubEnv: Map<string, string> | undefined;
    for (const p of ['/grub2/grubenv', '/boot/grub2/grubenv', '/grub/grubenv', '/boot/grub/grubenv']) {
      const f = locate(tree, p);
      const text = f ? await readText(f.hostPath) : null;
      if (text !== null) {
        grubEnv = parseGrubEnv(text).vars;
        break;
      }
    }

    // 1. override
    for (const p of [`/${OVERRIDE_FILE}`, `/boot/${OVERRIDE_FILE}`]) {
      const f = locate(tree, p);
      if (!f) continue;
      seen.get('override')!.push(`${tree.partition}:${p}`);
      const text = (await readText(f.hostPath)) ?? '';
      const r = parseOverride(text, p);
      addSkips(tree, r.skipped);
      notes.push(...r.notes);
      r.candidates.forEach((c, i) => found.get('override')!.push({ candidate: c, tree, order: i }));
      break;
    }

    // 2. BootLoaderSpec type #1
    const loaderConf = locate(tree, '/loader/loader.conf');
    if (loaderConf && loaderDefault === null) {
      const text = await readText(loaderConf.hostPath);
      if (text !== null) loaderDefault = parseLoaderConf(text).default;
    }
    const blsDirs = new Set<string>();
    for (const p of ['/loader/entries', '/boot/loader/entries']) {
      const host = isDir(tree, p);
      if (!host || blsDirs.has(host)) continue;
      blsDirs.add(host);
      const names = (await listDir(host)).filter((n) => n.toLowerCase().endsWith('.conf') && !n.startsWith('.') && !n.startsWith('auto-'));
      seen.get('bls')!.push(`${tree.partition}:${p} (${names.length} entries)`);
      for (const name of names) {
        checkAbort();
        const text = await readText(join(host, name));
        if (text === null) {
          skipped.push({ source: 'bls', what: `${p}/${name}`, reason: 'cannot be read', partition: tree.partition });
          continue;
        }
        const r = parseBlsEntry(name, text, { grubEnv, architecture: arch });
        notes.push(...r.notes);
        if (r.skipped) skipped.push({ ...r.skipped, what: `${p}/${name}`, partition: tree.partition });
        if (r.entry) found.get('bls')!.push({ candidate: r.entry.candidate, tree, sortable: r.entry, order: 0 });
      }
    }

    // 3. Unified Kernel Images
    const ukiDirs = new Set<string>();
    for (const p of ['/EFI/Linux', '/boot/EFI/Linux']) {
      const host = isDir(tree, p);
      if (!host || ukiDirs.has(host)) continue;
      ukiDirs.add(host);
      const names = (await listDir(host)).filter((n) => n.toLowerCase().endsWith('.efi') && !n.startsWith('.') && !n.startsWith('auto-'));
      seen.get('uki')!.push(`${tree.partition}:${p} (${names.length} images)`);
      for (const name of names) {
        checkAbort();
        const path = `${p}/${name}`;
        const hostPath = join(host, name);
        let size: number;
        try {
          size = (await stat(hostPath)).size;
        } catch {
          continue;
        }
        let header = await readRange(hostPath, 0, Math.min(size, PE_HEADER_BYTES));
        let pe = decodePeHeader(header, size);
        if (!pe.ok && pe.needBytes && pe.needBytes <= 16 * 1024 * 1024) {
          header = await readRange(hostPath, 0, pe.needBytes);
          pe = decodePeHeader(header, size);
        }
        if (!pe.ok) {
          skipped.push({ source: 'uki', what: path, reason: pe.error, partition: tree.partition });
          continue;
        }
        const texts = new Map<string, Uint8Array>();
        for (const [sname, s] of ukiTextSections(pe.image, size)) texts.set(sname, await readRange(hostPath, s.fileOffset, s.fileSize));
        const r = ukiCandidate(path, pe.image, size, texts, { architecture: arch });
        if (r.skipped) skipped.push({ ...r.skipped, partition: tree.partition });
        if (r.uki) {
          found.get('uki')!.push({
            candidate: r.uki.candidate,
            tree,
            order: 0,
            sortable: { id: r.uki.candidate.id, sortKey: r.uki.sortKey, machineId: null, version: r.uki.sortVersion, triesLeft: r.uki.triesLeft, triesDone: r.uki.triesDone },
          });
        }
      }
    }

    // 4. grub.cfg
    for (const p of ['/grub/grub.cfg', '/grub2/grub.cfg', '/boot/grub/grub.cfg', '/boot/grub2/grub.cfg']) {
      const f = locate(tree, p);
      if (!f) continue;
      checkAbort();
      seen.get('grub')!.push(`${tree.partition}:${p}`);
      const text = (await readText(f.hostPath)) ?? '\0';
      const prefix = p.slice(0, p.lastIndexOf('/'));
      const treeOf = (root: GrubRoot): BootTree | null => (root.kind === 'config' ? tree : treesFor(root, tree, trees).tree);
      let platform = options.platform;
      if (!platform) {
        const efi = isDir(tree, `${prefix}/x86_64-efi`);
        const pc = isDir(tree, `${prefix}/i386-pc`);
        if (efi && !pc) platform = 'efi';
        else if (pc && !efi) platform = 'pc';
      }
      const r = parseGrubConfig(text, {
        prefix,
        what: p,
        grubEnv,
        ...(platform ? { platform } : {}),
        exists: (root, path, test) => {
          const t = treeOf(root);
          if (!t) return undefined;
          if (test === 'd') return isDir(t, path) !== null;
          const l = locate(t, path);
          if (test === 's') return l !== null && l.size > 0;
          return l !== null || (test === 'e' && isDir(t, path) !== null);
        },
        readFile: (root, path) => {
          const t = treeOf(root);
          const l = t ? locate(t, path) : null;
          if (!l || l.size > TEXT_MAX) return undefined;
          try {
            return readFileSync(l.hostPath, 'utf8');
          } catch {
            return undefined;
          }
        },
      });
      notes.push(...r.notes);
      addSkips(tree, r.skipped);
      if (r.usesBlscfg) {
        grubUsesBlscfg = true;
        grubBlsDefault = r.defaultValue;
        notes.push(`${tree.partition}:${p} loads its menu from loader/entries (blscfg): those are listed as bls entries`);
      }
      r.candidates.forEach((c, i) => found.get('grub')!.push({ candidate: c, tree, order: i }));
      break;
    }

    // 5. syslinux / extlinux
    for (const p of ['/extlinux.conf', '/extlinux/extlinux.conf', '/syslinux.cfg', '/syslinux/syslinux.cfg', '/boot/extlinux.conf', '/boot/extlinux/extlinux.conf', '/boot/syslinux/syslinux.cfg', '/boot/syslinux.cfg']) {
      const f = locate(tree, p);
      if (!f) continue;
      seen.get('syslinux')!.push(`${tree.partition}:${p}`);
      const text = (await readText(f.hostPath)) ?? '\0';
      const r = parseSyslinux(text, {
        path: p,
        readFile: (path) => {
          const l = locate(tree, path);
          try {
            return l && l.size <= TEXT_MAX ? readFileSync(l.hostPath, 'utf8') : undefined;
          } catch {
            return undefined;
          }
        },
      });
      notes.push(...r.notes);
      addSkips(tree, r.skipped);
      r.candidates.forEach((c, i) => found.get('syslinux')!.push({ candidate: c, tree, order: i }));
      break;
    }

    // 6. kernel pairs
    let cmdline = options.cmdline ?? null;
    if (cmdline === null) {
      const etc = locate(tree, '/etc/kernel/cmdline');
      const text = etc ? await readText(etc.hostPath) : null;
      if (text !== null && text.trim()) {
        cmdline = text.trim().split(/\s+/).join(' ');
        notes.push(`${tree.partition}: kernel pairs use the command line from /etc/kernel/cmdline`);
      }
    }
    for (const p of ['/', '/boot']) {
      const host = p === '/' ? tree.dir : isDir(tree, p);
      if (!host || (p === '/boot' && tree.subdir === '/boot')) continue;
      const names = await listDir(host);
      const r = findKernelPairs(p, names, { cmdline });
      if (r.candidates.length || r.skipped.length) seen.get('kernel-pair')!.push(`${tree.partition}:${p}`);
      notes.push(...r.notes);
      addSkips(tree, r.skipped);
      r.candidates.forEach((c, i) => found.get('kernel-pair')!.push({ candidate: c, tree, order: i }));
    }
  }

  // Resolve files: a candidate whose kernel or an initrd is missing is skipped.
  const resolveOne = (f: Found): BootEntry | null => {
    const c = f.candidate;
    let tree = f.tree;
    if (c.root) {
      const r = treesFor(c.root, f.tree, trees);
      if (r.note) notes.push(`${c.title}: ${r.note}`);
      if (!r.tree) {
        skipped.push({ source: c.source, what: `"${c.title}"`, reason: `its files are on the file system with ${c.root.kind} ${c.root.value}, which is not on ${f.tree.partition}'s disk`, partition: f.tree.partition });
        return null;
      }
      tree = r.tree;
    }
    const resolveRef = (ref: FileRef, role: string): ResolvedFile | string => {
      const l = locate(tree, ref.path);
      if (!l) return `its ${role} ${ref.path} is missing`;
      if (ref.section) {
        if (ref.section.offset + ref.section.length > l.size) return `its ${role} section lies outside ${ref.path}`;
        return { tree, ref, hostPath: l.hostPath, offset: ref.section.offset, length: ref.section.length };
      }
      if (l.size === 0 && role === 'kernel') return `its kernel ${ref.path} is empty`;
      return { tree, ref, hostPath: l.hostPath, offset: 0, length: l.size };
    };
    const kernel = resolveRef(c.kernel, 'kernel');
    const initrds = c.initrds.map((r) => resolveRef(r, 'initrd'));
    const problem = [kernel, ...initrds].find((x): x is string => typeof x === 'string');
    if (problem) {
      skipped.push({ source: c.source, what: `"${c.title}" (${c.id})`, reason: problem, partition: tree.partition });
      return null;
    }
    const show = (r: FileRef) => (r.section ? `${r.path}:${r.section.name}` : r.path);
    return {
      id: c.id,
      title: c.title,
      version: c.version,
      kernel: show(c.kernel),
      initrds: c.initrds.map(show),
      cmdline: c.cmdline,
      source: c.source,
      partition: tree.partition,
      default: false,
      files: { kernel: kernel as ResolvedFile, initrds: initrds as ResolvedFile[] },
    };
  };

  // BLS type #1 and #2 share systemd-boot's order and loader.conf's default.
  const blsAll = [...found.get('bls')!, ...found.get('uki')!].sort((a, b) => compareBlsEntries(a.sortable!, b.sortable!));
  blsAll.forEach((f, i) => (f.order = i));

  const layouts: LayoutReport[] = [];
  const bySource = new Map<BootEntrySource, { e: BootEntry; f: Found }[]>();
  for (const source of SOURCE_ORDER) {
    const list = found.get(source)!.slice().sort((a, b) => a.order - b.order);
    const resolved: { e: BootEntry; f: Found }[] = [];
    for (const f of list) {
      const e = resolveOne(f);
      if (e) resolved.push({ e, f });
    }
    bySource.set(source, resolved);
    const looked = seen.get(source)!;
    const skippedHere = skipped.filter((s) => s.source === source).length;
    layouts.push({
      source,
      usable: resolved.length,
      summary: looked.length === 0 ? `none found (${WHERE[source]})` : `${looked.join(', ')}: ${resolved.length} usable${skippedHere ? `, ${skippedHere} skipped` : ''}`,
    });
  }
  const entries: BootEntry[] = SOURCE_ORDER.flatMap((s) => bySource.get(s)!.map((r) => r.e));

  // The default: the most preferred layout that has a usable entry, and
  // within it the layout's own default.
  let defaultEntry: BootEntry | null = null;
  for (const source of SOURCE_ORDER) {
    const resolved = bySource.get(source)!;
    if (defaultEntry) break;
    if (source === 'uki') continue; // decided together with 'bls'
    if (source === 'bls') {
      // Type #1 and #2 share systemd-boot's order and loader.conf's default
      // (or, with grub's blscfg, grubenv's saved_entry).
      const both = [...resolved, ...bySource.get('uki')!].sort((a, b) => a.f.order - b.f.order);
      if (both.length === 0) continue;
      const ids = both.map((r) => r.e.id);
      if (loaderDefault) {
        const pick = pickBlsDefault(ids, loaderDefault);
        if (pick.note) notes.push(pick.note);
        if (loaderDefault !== '@saved' && ids.some((id) => id === ids[pick.index])) defaultEntry = both[pick.index]!.e;
      } else if (grubUsesBlscfg && grubBlsDefault) {
        const want = grubBlsDefault.toLowerCase();
        const hit = both.find((r) => r.e.id === `${want}.conf` || r.e.id === want);
        notes.push(hit ? `grub's saved_entry "${grubBlsDefault}" chose ${hit.e.id}` : `grub's default "${grubBlsDefault}" names no loader entry; the first is used`);
        if (hit) defaultEntry = hit.e;
      }
      // Without a configured default: the first type #1 entry (the issue's
      // preference of BLS entries over UKIs), else the first UKI.
      defaultEntry ??= (resolved[0] ?? both[0]!).e;
      continue;
    }
    if (resolved.length) defaultEntry = (resolved.find((r) => r.f.candidate.isDefault) ?? resolved[0]!).e;
  }
  if (defaultEntry) {
    defaultEntry.default = true;
    entries.splice(entries.indexOf(defaultEntry), 1);
    entries.unshift(defaultEntry);
  }
  return { entries, skipped, notes, layouts };
}

const WHERE: Record<BootEntrySource, string> = {
  override: `no ${OVERRIDE_FILE} in / or /boot`,
  bls: 'no loader/entries/*.conf',
  uki: 'no EFI/Linux/*.efi',
  grub: 'no grub/grub.cfg, grub2/grub.cfg, boot/grub/grub.cfg or boot/grub2/grub.cfg',
  syslinux: 'no extlinux.conf or syslinux.cfg',
  'kernel-pair': 'no vmlinuz-VERSION in / or /boot',
};

/** Reads an entry's file bytes (the whole file or its UKI section). */
export async function readResolvedFile(f: ResolvedFile): Promise<Buffer> {
  return readRange(f.hostPath, f.offset, f.length);
}

export function listDirSync(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}
