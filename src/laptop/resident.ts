// Keeps a program's own files in the page cache, for the laptop watch: it
// runs in the laptop OS whose root is the laptop's disk, and must speak
// while that disk hangs (a pulled cable). Its code is mapped from files on
// that disk (node, libnode, libc, ICU...) and paged in on first use; a code
// path that runs for the first time during the outage (the error path of a
// poll, a timer) faults in a page that cannot be read, and the watch hangs
// with the disk instead of saying so. Seen in an end-to-end run: the
// desktop's watch stayed silent through a 60 s pull.
//
// So the watch reads every file it has mapped once at start, while the disk
// answers: their pages are then in the page cache, and a first use is a
// minor fault served from memory. Node cannot mlock; the page cache can be
// reclaimed under memory pressure, which a desktop running one OS rarely
// sees within a few minutes of outage.
import { closeSync, openSync, readSync } from 'node:fs';

/** The file-backed mappings of /proc/PID/maps: distinct paths, in order of appearance. */
export function mappedFiles(maps: string): string[] {
  const seen = new Set<string>();
  for (const line of maps.split('\n')) {
    // address perms offset dev inode path
    const m = /^\S+\s+\S+\s+\S+\s+\S+\s+(\d+)\s+(\/.*)$/.exec(line);
    if (!m || m[1] === '0') continue;
    const path = m[2]!;
    // Deleted files and special mappings are not reread.
    if (path.endsWith(' (deleted)') || path.startsWith('/dev/') || path.startsWith('/memfd:') || path.startsWith('/SYSV')) continue;
    seen.add(path);
  }
  return [...seen];
}

export interface ResidentResult {
  files: number;
  bytes: number;
  /** Files that could not be read, with why. */
  failed: string[];
}

/** Reads each file whole (into one reusable buffer), so that its pages are in the page cache. */
export function readIntoPageCache(paths: readonly string[]): ResidentResult {
  const buf = Buffer.allocUnsafe(1024 * 1024);
  const result: ResidentResult = { files: 0, bytes: 0, failed: [] };
  for (const path of paths) {
    let fd: number | undefined;
    try {
      fd = openSync(path, 'r');
      let n: number;
      while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) result.bytes += n;
      result.files++;
    } catch (err) {
      result.failed.push(`${path}: ${(err as Error).message}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  return result;
}
