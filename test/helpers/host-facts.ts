// Finds host facts written into tests: the kernel release of the machine the
// test was written on, spelled where it is compared with the host's output.
// A new machine has another release (Debian's linux-image-amd64 moves with
// every point release), so such a test passes only where it was written.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { release as osRelease } from 'node:os';
import { join, relative } from 'node:path';

export interface HostFactLiteral {
  path: string;
  line: number;
  literal: string;
  why: string;
}

/** A Debian kernel release as `uname -r` prints it (N.N.N-NN-amd64, N.N.N-NN-cloud-amd64). */
const DEBIAN_RELEASE = /\b\d+\.\d+\.\d+-\d+(?:-[a-z0-9]+)*-amd64\b/g;
/** A test that reads the host's kernel: its literals are compared with what the host has. */
const READS_HOST_KERNEL = /\bdebianKernel\(|uname -r|\bos\.release\(/;
/** Lines that say their release is invented for the test and compared with nothing on the host. */
const MADE_UP = /made-up release/;

export const HOST_FACT_FIX = 'read it at run time: debianKernel() in test/helpers/kernel.ts gives the installed release, path and modules directory';

/** The findings in `files`, given the releases this host has installed (may be empty). */
export function findHostFactLiterals(files: { path: string; text: string }[], hostReleases: readonly string[]): HostFactLiteral[] {
  const found: HostFactLiteral[] = [];
  for (const { path, text } of files) {
    const readsHost = READS_HOST_KERNEL.test(text);
    text.split('\n').forEach((line, i) => {
      if (MADE_UP.test(line)) return;
      for (const r of hostReleases) {
        if (r && line.includes(r)) found.push({ path, line: i + 1, literal: r, why: "spells this machine's kernel release" });
      }
      if (!readsHost) return;
      for (const m of line.matchAll(DEBIAN_RELEASE)) {
        if (hostReleases.includes(m[0])) continue; // reported above
        found.push({ path, line: i + 1, literal: m[0], why: "spells a kernel release in a test that compares with the host's kernel" });
      }
    });
  }
  return found;
}

/** Kernel releases installed here: /boot/vmlinuz-*, /lib/modules/*, and the running one. */
export function hostKernelReleases(): string[] {
  const names = (dir: string): string[] => {
    try {
      return readdirSync(dir);
    } catch {
      return [];
    }
  };
  const releases = new Set<string>([osRelease()]);
  for (const n of names('/boot')) if (n.startsWith('vmlinuz-')) releases.add(n.slice('vmlinuz-'.length));
  for (const n of names('/lib/modules')) releases.add(n);
  return [...releases].filter((r) => r.length >= 5);
}

/** Source files of tests, benchmarks and scripts under `root`, fixtures left out. */
export function projectTestSources(root: string): { path: string; text: string }[] {
  const out: { path: string; text: string }[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) {
        if (name !== 'fixtures' && name !== 'node_modules') walk(full);
      } else if (/\.(ts|mjs|js|sh)$/.test(name)) {
        out.push({ path: relative(root, full), text: readFileSync(full, 'utf8') });
      }
    }
  };
  for (const top of ['test', 'bench', 'scripts']) walk(join(root, top));
  return out;
}
