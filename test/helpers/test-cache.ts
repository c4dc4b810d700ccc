// The VM tests' cache (/var/cache/stiefelsystem-test): stiefelOS images and
// laptop disk images keyed by a hash of their inputs. Whenever an entry is
// resolved, the entries of the same kind that other inputs named go: a
// laptop base is 0.5-1 GB, and Debian's archive moves on. Clearing it is
// always safe: `rm -rf /var/cache/stiefelsystem-test` (the next VM test
// rebuilds what it needs, about 3 minutes per laptop base).
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const TEST_CACHE_DIR = '/var/cache/stiefelsystem-test';

/**
 * Removes every entry of `cacheDir` whose name starts with `prefix` and is not
 * one of `keep`, including half-built ones (`NAME.tmp…`) left by an interrupted run.
 * Returns the names removed.
 */
export function pruneCache(cacheDir: string, prefix: string, keep: string | readonly string[]): string[] {
  const kept = new Set(typeof keep === 'string' ? [keep] : keep);
  let names: string[];
  try {
    names = readdirSync(cacheDir);
  } catch {
    return [];
  }
  const removed = names.filter((n) => n.startsWith(prefix) && !kept.has(n));
  for (const n of removed) rmSync(join(cacheDir, n), { recursive: true, force: true });
  return removed;
}
