// Builds the .deb the way `npm run package` does (from the bundle the
// pretest step made) and reads it back with dpkg-deb.
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { cliPath, REPO_ROOT } from './cli';

export const PACKAGE_SCRIPT = join(REPO_ROOT, 'scripts', 'package.ts');

/** Runs scripts/package.ts into outDir and returns the .deb's path. */
export function buildDeb(outDir: string, env: NodeJS.ProcessEnv = process.env): string {
  cliPath();
  execFileSync(process.execPath, ['--import', 'tsx', PACKAGE_SCRIPT, '--out', outDir], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const debs = readdirSync(outDir).filter((n) => n.endsWith('.deb'));
  if (debs.length !== 1) throw new Error(`expected one .deb in ${outDir}, found ${debs.join(', ') || 'none'}`);
  return join(outDir, debs[0]!);
}

export interface DebEntry {
  type: string;
  mode: string;
  owner: string;
  size: number;
  /** Absolute path on the installed system; directories end in '/'. */
  path: string;
}

/** dpkg-deb -c, parsed. */
export function debContents(deb: string): DebEntry[] {
  const out = execFileSync('dpkg-deb', ['-c', deb], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = /^(.)(\S{9}) (\S+)\s+(\d+) \S+ \S+ \.(\/.*)$/.exec(line);
      if (!m) throw new Error(`unexpected dpkg-deb -c line: ${line}`);
      return { type: m[1]!, mode: m[2]!, owner: m[3]!, size: Number(m[4]), path: m[5]! };
    });
}

/** The control file's fields (dpkg-deb -f), continuation lines joined with '\n'. */
export function debControl(deb: string): Map<string, string> {
  return parseDeb822(execFileSync('dpkg-deb', ['-f', deb], { encoding: 'utf8' }))[0] ?? new Map();
}

/** Paragraphs of a deb822 file (control, DEP-5 copyright): field name to value, continuation lines kept. */
export function parseDeb822(text: string): Array<Map<string, string>> {
  const paragraphs: Array<Map<string, string>> = [];
  let current: Map<string, string> | null = null;
  let last: string | null = null;
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      current = null;
      last = null;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (!current || last === null) throw new Error(`a continuation line outside a field: '${line}'`);
      current.set(last, `${current.get(last)}\n${line}`);
      continue;
    }
    const m = /^([A-Za-z0-9][A-Za-z0-9-]*):\s?(.*)$/.exec(line);
    if (!m) throw new Error(`not a field line: '${line}'`);
    if (!current) {
      current = new Map();
      paragraphs.push(current);
    }
    if (current.has(m[1]!)) throw new Error(`field ${m[1]} twice in one paragraph`);
    current.set(m[1]!, m[2]!);
    last = m[1]!;
  }
  return paragraphs;
}

/** Depends as groups of alternatives: 'a (>= 1), b | c' gives [[a], [b, c]] (names only). */
export function dependsGroups(depends: string): string[][] {
  return depends
    .split(',')
    .map((g) => g.split('|').map((alt) => alt.trim().replace(/\s*\(.*\)$/, '')))
    .filter((g) => g.length > 0 && g[0] !== '');
}
