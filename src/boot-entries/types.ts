// The shapes every layout parser produces. Parsers are pure: they read text
// or bytes handed to them and return candidates plus reasons for what they
// skipped; src/boot-entries/discover.ts resolves the candidates' files on a
// mounted tree.

/** Where an entry was found, in order of preference (what the laptop's own boot loader would boot comes first). */
export type BootEntrySource = 'override' | 'bls' | 'uki' | 'grub' | 'syslinux' | 'kernel-pair';

export const SOURCE_ORDER: readonly BootEntrySource[] = ['override', 'bls', 'uki', 'grub', 'syslinux', 'kernel-pair'];

/** A part of a file: a whole file, or a byte range of it (a UKI's PE section). */
export interface FileRef {
  /** Path inside the partition, always starting with '/'. */
  path: string;
  /** For UKI sections: the section name, offset and length inside `path`. */
  section?: { name: string; offset: number; length: number };
}

/** What a parser found before its files were looked at. */
export interface Candidate {
  id: string;
  title: string;
  version: string | null;
  kernel: FileRef;
  initrds: FileRef[];
  /** null: the layout does not say (kernel pairs); the caller's config decides. */
  cmdline: string | null;
  source: BootEntrySource;
  /** The layout's own choice of default entry. */
  isDefault: boolean;
  /**
   * grub only: the device grub's `$root` pointed at for this entry's paths,
   * when it is not the partition holding grub.cfg.
   */
  root?: GrubRootSpec;
}

export type GrubRootSpec =
  | { kind: 'fs-uuid'; value: string }
  | { kind: 'label'; value: string }
  | { kind: 'file'; value: string }
  | { kind: 'device'; value: string };

/** Something looked at and not used, with the reason a person can act on. */
export interface Skipped {
  source: BootEntrySource;
  /** The file (or file and entry) that was skipped, for the message. */
  what: string;
  reason: string;
}

/** A parser's answer: never an exception. */
export interface ParseResult {
  candidates: Candidate[];
  skipped: Skipped[];
  /** Remarks about how the layout was read (e.g. the default that applied). */
  notes: string[];
}

export function emptyResult(): ParseResult {
  return { candidates: [], skipped: [], notes: [] };
}

/** Joins a path given in a config with the directory it is relative to; '/'-rooted, no '..' above the root. */
export function normalizeBootPath(path: string, base = '/'): string {
  const parts: string[] = [];
  const full = path.startsWith('/') ? path : `${base.replace(/\/+$/, '')}/${path}`;
  for (const part of full.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return `/${parts.join('/')}`;
}
