// BootLoaderSpec (UAPI.1) type #1 entries, `loader/entries/*.conf`, and
// `loader/loader.conf`. Pure: text in, candidates and reasons out.
//
// "Each line is a key, whitespace, value; '#' starts a comment line."
// Keys used here: title, version, machine-id, sort-key, linux, initrd
// (repeatable, in order), options (repeatable, joined with spaces), efi,
// architecture. Paths are relative to the root of the partition holding the
// entry. Boot counting: `NAME+LEFT[-DONE].conf`; entries with no tries left
// sort last.
import { compareVersions } from './version';
import { normalizeBootPath, type Candidate, type Skipped } from './types';

export interface BlsSortable {
  id: string;
  sortKey: string | null;
  machineId: string | null;
  version: string | null;
  /** -1: no boot counting. */
  triesLeft: number;
  triesDone: number;
}

export interface BlsEntry extends BlsSortable {
  candidate: Candidate;
}

export interface BlsParseOptions {
  /** grub environment block (Fedora's `$kernelopts`); values are expanded from it. */
  grubEnv?: ReadonlyMap<string, string>;
  /** Architecture of the machine that will boot the entry, in BLS spelling. */
  architecture?: string;
}

const BOOT_COUNT = /^(.*?)\+(\d+)(?:-(\d+))?(\.conf|\.efi)$/i;

/** Splits boot counting off a file name: `foo+3-1.conf` → id `foo.conf`, 3 left, 1 done. */
export function parseBootCounting(fileName: string): { id: string; triesLeft: number; triesDone: number } {
  const m = BOOT_COUNT.exec(fileName);
  if (!m) return { id: fileName.toLowerCase(), triesLeft: -1, triesDone: -1 };
  return { id: `${m[1]}${m[4]}`.toLowerCase(), triesLeft: Number(m[2]), triesDone: m[3] === undefined ? 0 : Number(m[3]) };
}

function expandVars(value: string, env: ReadonlyMap<string, string> | undefined, used: Set<string>): string {
  return value.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, a: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    used.add(name);
    return env?.get(name) ?? '';
  });
}

const squash = (s: string): string => s.split(/\s+/).filter(Boolean).join(' ');

export function parseBlsEntry(fileName: string, text: string, options: BlsParseOptions = {}): { entry?: BlsEntry; skipped?: Skipped; notes: string[] } {
  const what = `/loader/entries/${fileName}`;
  const notes: string[] = [];
  const skip = (reason: string) => ({ skipped: { source: 'bls' as const, what, reason }, notes });
  if (text.includes('\0')) return skip('not a text file');
  const single = new Map<string, string>();
  const initrds: string[] = [];
  const opts: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!;
    const value = m[2]!.trim();
    if (key === 'initrd') initrds.push(...value.split(/\s+/).filter(Boolean));
    else if (key === 'options') opts.push(value);
    else single.set(key, value);
  }
  const arch = single.get('architecture');
  const wantArch = options.architecture ?? 'x64';
  if (arch && arch.toLowerCase() !== wantArch) return skip(`for architecture ${arch}, not ${wantArch}`);
  const linux = single.get('linux');
  if (!linux) {
    if (single.has('efi')) return skip(`an EFI program entry (efi ${single.get('efi')}), not a Linux kernel`);
    return skip('has no "linux" line');
  }
  const used = new Set<string>();
  const kernelPath = expandVars(linux, options.grubEnv, used).trim();
  const initrdPaths = initrds.map((p) => expandVars(p, options.grubEnv, used).trim()).flatMap((p) => p.split(/\s+/)).filter(Boolean);
  const rawOptions = opts.join(' ');
  const cmdline = squash(expandVars(rawOptions, options.grubEnv, used));
  if (used.size) {
    const missing = [...used].filter((v) => !options.grubEnv?.has(v));
    if (rawOptions && !cmdline) {
      return skip(`its options (${squash(rawOptions)}) come from grub variables ${[...used].map((v) => `$${v}`).join(', ')} that ${options.grubEnv ? 'the grubenv does not set' : 'are not set: no grubenv was found'}`);
    }
    notes.push(
      `${what}: expanded ${[...used].map((v) => `$${v}`).join(', ')} from the grub environment${missing.length ? ` (${missing.map((v) => `$${v}`).join(', ')} not set: empty, as grub does)` : ''}`,
    );
  }
  if (!kernelPath) return skip('its "linux" line is empty after expanding variables');
  const counting = parseBootCounting(fileName);
  const version = single.get('version') || null;
  const entry: BlsEntry = {
    id: counting.id,
    sortKey: single.get('sort-key') || null,
    machineId: single.get('machine-id') || null,
    version,
    triesLeft: counting.triesLeft,
    triesDone: counting.triesDone,
    candidate: {
      id: counting.id,
      title: single.get('title') || counting.id.replace(/\.conf$/i, ''),
      version,
      kernel: { path: normalizeBootPath(kernelPath) },
      initrds: initrdPaths.map((p) => ({ path: normalizeBootPath(p) })),
      cmdline,
      source: 'bls',
      isDefault: false,
    },
  };
  return { entry, notes };
}

/**
 * systemd-boot's order (config_entry_compare): entries with no tries left go
 * last; entries with a sort-key before those without, by sort-key, then
 * machine-id, then version, newest first; then by id, newest first by
 * version comparison; then more tries left, then fewer tries done.
 */
export function compareBlsEntries(a: BlsSortable, b: BlsSortable): number {
  let r = Number(a.triesLeft === 0) - Number(b.triesLeft === 0);
  if (r) return r;
  r = Number(!a.sortKey) - Number(!b.sortKey);
  if (r) return r;
  if (a.sortKey && b.sortKey) {
    r = a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0;
    if (r) return r;
    const ma = a.machineId ?? '';
    const mb = b.machineId ?? '';
    r = ma < mb ? -1 : ma > mb ? 1 : 0;
    if (r) return r;
    r = -compareVersions(a.version, b.version);
    if (r) return r;
  }
  r = -compareVersions(a.id, b.id);
  if (r) return r;
  if (a.triesLeft < 0 || b.triesLeft < 0) return 0;
  r = -(a.triesLeft - b.triesLeft);
  if (r) return r;
  return a.triesDone - b.triesDone;
}

export interface LoaderConf {
  /** The `default` glob, lowercased as systemd-boot case-folds it. */
  default: string | null;
  notes: string[];
}

export function parseLoaderConf(text: string): LoaderConf {
  const conf: LoaderConf = { default: null, notes: [] };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (m && m[1] === 'default') conf.default = m[2]!.trim().replace(/^"(.*)"$/, '$1').toLowerCase();
  }
  return conf;
}

/** fnmatch(3) without flags for the `default` pattern: `*`, `?` and `[...]`. */
export function globMatch(pattern: string, name: string): boolean {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = pattern.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  re += '$';
  try {
    return new RegExp(re, 's').test(name);
  } catch {
    return pattern === name;
  }
}

/**
 * Index of the default among sorted ids: the first matching the loader.conf
 * pattern, else the first entry (as systemd-boot). Leniency of ours: when the
 * pattern matches nothing we also try it with ".conf" appended, since many
 * install guides write `default arch` for arch.conf.
 */
export function pickBlsDefault(sortedIds: readonly string[], pattern: string | null): { index: number; note: string | null } {
  if (sortedIds.length === 0) return { index: -1, note: null };
  if (pattern && pattern !== '@saved') {
    for (const p of [pattern, `${pattern}.conf`]) {
      const i = sortedIds.findIndex((id) => globMatch(p, id));
      if (i >= 0) return { index: i, note: `loader.conf default "${pattern}" chose ${sortedIds[i]}` };
    }
    return { index: 0, note: `loader.conf default "${pattern}" matches no entry: the first entry is the default, as systemd-boot does` };
  }
  if (pattern === '@saved') return { index: 0, note: 'loader.conf default is @saved (kept in an EFI variable we cannot read offline): the first entry is used' };
  return { index: 0, note: null };
}
