// Walks mounted trees (partitions, or a directory the user named) the way
// the boot loaders would: runs every layout parser on the files it finds,
// resolves each candidate's kernel and initrds to real files, and picks the
// default. Reads only; never writes.
import { readFileSync, statSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { readRange } from '../disk/read-range';
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

/** What a scan of the trees has gathered so far; each layout's step adds to it. */
class Scan {
  readonly notes: string[] = [];
  readonly skipped: SkippedItem[] = [];
  readonly found = new Map<BootEntrySource, Found[]>(SOURCE_ORDER.map((s) => [s, []]));
  /** Per layout, where it was looked for and found (for the report). */
  readonly seen = new Map<BootEntrySource, string[]>(SOURCE_ORDER.map((s) => [s, []]));
  /** loader.conf's `default`, from the first tree that has one. */
  loaderDefault: string | null = null;
  /** grub.cfg loads BLS entries (blscfg), with this default. */
  grubUsesBlscfg = false;
  grubBlsDefault: string | null = null;
  readonly arch: string;

  constructor(
    readonly trees: readonly BootTree[],
    readonly options: DiscoverOptions,
  ) {
    this.arch = options.architecture ?? 'x64';
  }

  checkAbort(): void {
    const signal = this.options.signal;
    if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
  }

  add(source: BootEntrySource, tree: BootTree, candidates: readonly Candidate[]): void {
    candidates.forEach((candidate, order) => this.found.get(source)!.push({ candidate, tree, order }));
  }

  skip(tree: BootTree, list: readonly Skipped[]): void {
    this.skipped.push(...list.map((s) => ({ ...s, partition: tree.partition })));
  }

  looked(source: BootEntrySource, what: string): void {
    this.seen.get(source)!.push(what);
  }
}

/** The first of `paths` that is a file in `tree`, with the path it was found as. */
function firstFile(tree: BootTree, paths: readonly string[]): { path: string; hostPath: string; size: number } | null {
  for (const path of paths) {
    const f = locate(tree, path);
    if (f) return { path, ...f };
  }
  return null;
}

/** A reader for the parsers that follow includes (grub `source`, syslinux INCLUDE): text files only. */
function textFileReader(tree: BootTree | null, path: string): string | undefined {
  const l = tree ? locate(tree, path) : null;
  if (!l || l.size > TEXT_MAX) return undefined;
  try {
    return readFileSync(l.hostPath, 'utf8');
  } catch {
    return undefined;
  }
}

/** grub's environment block (Fedora's $kernelopts, saved_entry). */
async function readGrubEnv(tree: BootTree): Promise<Map<string, string> | undefined> {
  for (const p of ['/grub2/grubenv', '/boot/grub2/grubenv', '/grub/grubenv', '/boot/grub/grubenv']) {
    const f = locate(tree, p);
    const text = f ? await readText(f.hostPath) : null;
    if (text !== null) return parseGrubEnv(text).vars;
  }
  return undefined;
}

async function scanOverride(scan: Scan, tree: BootTree): Promise<void> {
  const f = firstFile(tree, [`/${OVERRIDE_FILE}`, `/boot/${OVERRIDE_FILE}`]);
  if (!f) return;
  scan.looked('override', `${tree.partition}:${f.path}`);
  const r = parseOverride((await readText(f.hostPath)) ?? '', f.path);
  scan.skip(tree, r.skipped);
  scan.notes.push(...r.notes);
  scan.add('override', tree, r.candidates);
}

/** The directories of `paths` that exist in `tree`, each once (a /boot tree may reach one by two names). */
function entryDirs(tree: BootTree, paths: readonly string[]): { path: string; host: string }[] {
  const out: { path: string; host: string }[] = [];
  for (const path of paths) {
    const host = isDir(tree, path);
    if (host && !out.some((d) => d.host === host)) out.push({ path, host });
  }
  return out;
}

async function entryNames(host: string, suffix: string): Promise<string[]> {
  return (await listDir(host)).filter((n) => n.toLowerCase().endsWith(suffix) && !n.startsWith('.') && !n.startsWith('auto-'));
}

async function scanBls(scan: Scan, tree: BootTree, grubEnv: Map<string, string> | undefined): Promise<void> {
  const loaderConf = locate(tree, '/loader/loader.conf');
  if (loaderConf && scan.loaderDefault === null) {
    const text = await readText(loaderConf.hostPath);
    if (text !== null) scan.loaderDefault = parseLoaderConf(text).default;
  }
  for (const { path: p, host } of entryDirs(tree, ['/loader/entries', '/boot/loader/entries'])) {
    const names = await entryNames(host, '.conf');
    scan.looked('bls', `${tree.partition}:${p} (${names.length} entries)`);
    for (const name of names) {
      scan.checkAbort();
      const text = await readText(join(host, name));
      if (text === null) {
        scan.skipped.push({ source: 'bls', what: `${p}/${name}`, reason: 'cannot be read', partition: tree.partition });
        continue;
      }
      const r = parseBlsEntry(name, text, { grubEnv, architecture: scan.arch });
      scan.notes.push(...r.notes);
      if (r.skipped) scan.skipped.push({ ...r.skipped, what: `${p}/${name}`, partition: tree.partition });
      if (r.entry) scan.found.get('bls')!.push({ candidate: r.entry.candidate, tree, sortable: r.entry, order: 0 });
    }
  }
}

/** One Unified Kernel Image: its PE header and text sections, read without reading the whole file. */
async function scanUkiFile(scan: Scan, tree: BootTree, path: string, hostPath: string): Promise<void> {
  let size: number;
  try {
    size = (await stat(hostPath)).size;
  } catch {
    return;
  }
  let header = await readRange(hostPath, 0, Math.min(size, PE_HEADER_BYTES));
  let pe = decodePeHeader(header, size);
  if (!pe.ok && pe.needBytes && pe.needBytes <= 16 * 1024 * 1024) {
    header = await readRange(hostPath, 0, pe.needBytes);
    pe = decodePeHeader(header, size);
  }
  if (!pe.ok) {
    scan.skipped.push({ source: 'uki', what: path, reason: pe.error, partition: tree.partition });
    return;
  }
  const texts = new Map<string, Uint8Array>();
  for (const [sname, s] of ukiTextSections(pe.image, size)) texts.set(sname, await readRange(hostPath, s.fileOffset, s.fileSize));
  const r = ukiCandidate(path, pe.image, size, texts, { architecture: scan.arch });
  if (r.skipped) scan.skipped.push({ ...r.skipped, partition: tree.partition });
  if (!r.uki) return;
  const { candidate, sortKey, sortVersion, triesLeft, triesDone } = r.uki;
  scan.found.get('uki')!.push({ candidate, tree, order: 0, sortable: { id: candidate.id, sortKey, machineId: null, version: sortVersion, triesLeft, triesDone } });
}

async function scanUki(scan: Scan, tree: BootTree): Promise<void> {
  for (const { path: p, host } of entryDirs(tree, ['/EFI/Linux', '/boot/EFI/Linux'])) {
    const names = await entryNames(host, '.efi');
    scan.looked('uki', `${tree.partition}:${p} (${names.length} images)`);
    for (const name of names) {
      scan.checkAbort();
      await scanUkiFile(scan, tree, `${p}/${name}`, join(host, name));
    }
  }
}

/** $grub_platform from the modules installed next to grub.cfg, when the caller did not say. */
function grubPlatform(tree: BootTree, prefix: string, given: 'efi' | 'pc' | undefined): 'efi' | 'pc' | undefined {
  if (given) return given;
  const efi = isDir(tree, `${prefix}/x86_64-efi`);
  const pc = isDir(tree, `${prefix}/i386-pc`);
  if (efi && !pc) return 'efi';
  if (pc && !efi) return 'pc';
  return undefined;
}

async function scanGrub(scan: Scan, tree: BootTree, grubEnv: Map<string, string> | undefined): Promise<void> {
  const f = firstFile(tree, ['/grub/grub.cfg', '/grub2/grub.cfg', '/boot/grub/grub.cfg', '/boot/grub2/grub.cfg']);
  if (!f) return;
  scan.checkAbort();
  const p = f.path;
  scan.looked('grub', `${tree.partition}:${p}`);
  const text = (await readText(f.hostPath)) ?? '\0';
  const prefix = p.slice(0, p.lastIndexOf('/'));
  const treeOf = (root: GrubRoot): BootTree | null => (root.kind === 'config' ? tree : treesFor(root, tree, scan.trees).tree);
  const platform = grubPlatform(tree, prefix, scan.options.platform);
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
    readFile: (root, path) => textFileReader(treeOf(root), path),
  });
  scan.notes.push(...r.notes);
  scan.skip(tree, r.skipped);
  if (r.usesBlscfg) {
    scan.grubUsesBlscfg = true;
    scan.grubBlsDefault = r.defaultValue;
    scan.notes.push(`${tree.partition}:${p} loads its menu from loader/entries (blscfg): those are listed as bls entries`);
  }
  scan.add('grub', tree, r.candidates);
}

const SYSLINUX_CONFIGS = ['/extlinux.conf', '/extlinux/extlinux.conf', '/syslinux.cfg', '/syslinux/syslinux.cfg', '/boot/extlinux.conf', '/boot/extlinux/extlinux.conf', '/boot/syslinux/syslinux.cfg', '/boot/syslinux.cfg'];

async function scanSyslinux(scan: Scan, tree: BootTree): Promise<void> {
  const f = firstFile(tree, SYSLINUX_CONFIGS);
  if (!f) return;
  scan.looked('syslinux', `${tree.partition}:${f.path}`);
  const r = parseSyslinux((await readText(f.hostPath)) ?? '\0', { path: f.path, readFile: (path) => textFileReader(tree, path) });
  scan.notes.push(...r.notes);
  scan.skip(tree, r.skipped);
  scan.add('syslinux', tree, r.candidates);
}

/** The command line for kernel pairs: the config's, else the tree's /etc/kernel/cmdline. */
async function kernelPairCmdline(scan: Scan, tree: BootTree): Promise<string | null> {
  if (scan.options.cmdline != null) return scan.options.cmdline;
  const etc = locate(tree, '/etc/kernel/cmdline');
  const text = etc ? await readText(etc.hostPath) : null;
  if (text === null || !text.trim()) return null;
  scan.notes.push(`${tree.partition}: kernel pairs use the command line from /etc/kernel/cmdline`);
  return text.trim().split(/\s+/).join(' ');
}

async function scanKernelPairs(scan: Scan, tree: BootTree): Promise<void> {
  const cmdline = await kernelPairCmdline(scan, tree);
  for (const p of ['/', '/boot']) {
    const host = p === '/' ? tree.dir : isDir(tree, p);
    if (!host || (p === '/boot' && tree.subdir === '/boot')) continue;
    const r = findKernelPairs(p, await listDir(host), { cmdline });
    if (r.candidates.length || r.skipped.length) scan.looked('kernel-pair', `${tree.partition}:${p}`);
    scan.notes.push(...r.notes);
    scan.skip(tree, r.skipped);
    scan.add('kernel-pair', tree, r.candidates);
  }
}

/** Every layout of one tree, in the order of preference. */
async function scanTree(scan: Scan, tree: BootTree): Promise<void> {
  scan.checkAbort();
  scan.options.log?.debug(`looking in ${tree.partition} (${tree.dir})`);
  const grubEnv = await readGrubEnv(tree);
  await scanOverride(scan, tree);
  await scanBls(scan, tree, grubEnv);
  await scanUki(scan, tree);
  await scanGrub(scan, tree, grubEnv);
  await scanSyslinux(scan, tree);
  await scanKernelPairs(scan, tree);
}

/** A candidate with its kernel and initrds found as files; null (and a skip with the reason) when one is missing. */
function resolveCandidate(scan: Scan, f: Found): BootEntry | null {
  const c = f.candidate;
  let tree = f.tree;
  if (c.root) {
    const r = treesFor(c.root, f.tree, scan.trees);
    if (r.note) scan.notes.push(`${c.title}: ${r.note}`);
    if (!r.tree) {
      scan.skipped.push({ source: c.source, what: `"${c.title}"`, reason: `its files are on the file system with ${c.root.kind} ${c.root.value}, which is not on ${f.tree.partition}'s disk`, partition: f.tree.partition });
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
    scan.skipped.push({ source: c.source, what: `"${c.title}" (${c.id})`, reason: problem, partition: tree.partition });
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
}

type Resolved = { e: BootEntry; f: Found }[];

/** Each layout's usable entries in its own order, and a line saying what was looked at. */
function resolveLayouts(scan: Scan): { bySource: Map<BootEntrySource, Resolved>; layouts: LayoutReport[] } {
  // BLS type #1 and #2 share systemd-boot's order and loader.conf's default.
  const blsAll = [...scan.found.get('bls')!, ...scan.found.get('uki')!].sort((a, b) => compareBlsEntries(a.sortable!, b.sortable!));
  blsAll.forEach((f, i) => (f.order = i));
  const layouts: LayoutReport[] = [];
  const bySource = new Map<BootEntrySource, Resolved>();
  for (const source of SOURCE_ORDER) {
    const list = scan.found.get(source)!.slice().sort((a, b) => a.order - b.order);
    const resolved: Resolved = [];
    for (const f of list) {
      const e = resolveCandidate(scan, f);
      if (e) resolved.push({ e, f });
    }
    bySource.set(source, resolved);
    const looked = scan.seen.get(source)!;
    const skippedHere = scan.skipped.filter((s) => s.source === source).length;
    layouts.push({
      source,
      usable: resolved.length,
      summary: looked.length === 0 ? `none found (${WHERE[source]})` : `${looked.join(', ')}: ${resolved.length} usable${skippedHere ? `, ${skippedHere} skipped` : ''}`,
    });
  }
  return { bySource, layouts };
}

/**
 * The default among BLS type #1 and #2 entries (one order): loader.conf's
 * default, or with grub's blscfg its saved_entry; else the first type #1
 * entry (BLS entries are preferred over UKIs), else the first UKI.
 */
function blsDefault(scan: Scan, bls: Resolved, uki: Resolved): BootEntry | null {
  const both = [...bls, ...uki].sort((a, b) => a.f.order - b.f.order);
  if (both.length === 0) return null;
  const ids = both.map((r) => r.e.id);
  if (scan.loaderDefault) {
    const pick = pickBlsDefault(ids, scan.loaderDefault);
    if (pick.note) scan.notes.push(pick.note);
    if (scan.loaderDefault !== '@saved' && ids.some((id) => id === ids[pick.index])) return both[pick.index]!.e;
  } else if (scan.grubUsesBlscfg && scan.grubBlsDefault) {
    const want = scan.grubBlsDefault.toLowerCase();
    const hit = both.find((r) => r.e.id === `${want}.conf` || r.e.id === want);
    scan.notes.push(hit ? `grub's saved_entry "${scan.grubBlsDefault}" chose ${hit.e.id}` : `grub's default "${scan.grubBlsDefault}" names no loader entry; the first is used`);
    if (hit) return hit.e;
  }
  return (bls[0] ?? both[0]!).e;
}

/** The default: the most preferred layout that has a usable entry, and within it the layout's own default. */
function pickDefault(scan: Scan, bySource: Map<BootEntrySource, Resolved>): BootEntry | null {
  for (const source of SOURCE_ORDER) {
    if (source === 'uki') continue; // decided together with 'bls'
    const resolved = bySource.get(source)!;
    const pick = source === 'bls' ? blsDefault(scan, resolved, bySource.get('uki')!) : ((resolved.find((r) => r.f.candidate.isDefault) ?? resolved[0])?.e ?? null);
    if (pick) return pick;
  }
  return null;
}

export async function discoverBootEntries(trees: readonly BootTree[], options: DiscoverOptions = {}): Promise<Discovery> {
  const scan = new Scan(trees, { ...options, log: options.log ?? silentLogger });
  for (const tree of trees) await scanTree(scan, tree);
  const { bySource, layouts } = resolveLayouts(scan);
  const entries: BootEntry[] = SOURCE_ORDER.flatMap((s) => bySource.get(s)!.map((r) => r.e));
  const defaultEntry = pickDefault(scan, bySource);
  if (defaultEntry) {
    defaultEntry.default = true;
    entries.splice(entries.indexOf(defaultEntry), 1);
    entries.unshift(defaultEntry);
  }
  return { entries, skipped: scan.skipped, notes: scan.notes, layouts };
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
