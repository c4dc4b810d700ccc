// The shared-library closure of programs, found the way the dynamic loader
// finds it (ld.so(8), "Search order"): DT_RPATH (when there is no
// DT_RUNPATH), DT_RUNPATH, the directories of /etc/ld.so.conf (what the
// cache is built from), then the default directories; a candidate counts only
// when it is an ELF file of the same class and machine as the object needing it.
import { readFile, readdir, realpath } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import { ELFCLASS64, ElfError, isElf, readElfDynamic, readElfHeader, type ElfDynamicInfo } from '../elf/elf';
import { defaultLibraryDirs, expandDynamicTokens, matchGlob, parseLdSoConf } from './ld-so-conf';

export interface ElfObject {
  /** The path the loader uses (a library's search-path location, not its realpath). */
  path: string;
  info: ElfDynamicInfo;
  /** The file's bytes, kept so the image builder does not read it twice. */
  data: Buffer;
}

export interface LibraryClosure {
  /** Every program and library, keyed by the path it is found at. */
  objects: Map<string, ElfObject>;
  /** Program interpreters (dynamic loaders) used, e.g. /lib64/ld-linux-x86-64.so.2. */
  interpreters: Set<string>;
}

/** Directories from /etc/ld.so.conf and its `include`s, in order, without duplicates. */
export async function readLdSoConfDirs(confPath = '/etc/ld.so.conf', depth = 0): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(confPath, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
  const conf = parseLdSoConf(text);
  const dirs = [...conf.dirs];
  if (depth < 8) {
    for (const inc of conf.includes) {
      const pattern = posix.isAbsolute(inc) ? inc : join(dirname(confPath), inc);
      const dir = dirname(pattern);
      const base = pattern.slice(dir.length + 1);
      let names: string[] = [];
      try {
        names = (await readdir(dir)).filter((n) => matchGlob(base, n)).sort();
      } catch {
        continue;
      }
      for (const n of names) dirs.push(...(await readLdSoConfDirs(join(dir, n), depth + 1)));
    }
  }
  return [...new Set(dirs)];
}

export interface ClosureOptions {
  /** Directories from ld.so.conf (see readLdSoConfDirs). */
  confDirs: string[];
  /** Reads a file; the image builder passes a caching reader. */
  read?: (path: string) => Promise<Buffer>;
}

async function tryRead(read: (p: string) => Promise<Buffer>, path: string): Promise<Buffer | undefined> {
  try {
    return await read(path);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR' || code === 'ELOOP') return undefined;
    throw err;
  }
}

/**
 * Every shared library (and interpreter) the given programs need, transitively.
 * Throws a StiefelError naming the program and the library that is missing.
 */
export async function libraryClosure(programs: readonly string[], options: ClosureOptions): Promise<LibraryClosure> {
  const read = options.read ?? ((p: string) => readFile(p));
  const objects = new Map<string, ElfObject>();
  const interpreters = new Set<string>();
  const parse = (path: string, data: Buffer): ElfDynamicInfo => {
    try {
      return readElfDynamic(data);
    } catch (err) {
      if (err instanceof ElfError) throw new StiefelError('E_IMAGE_ELF', `${path} is not a readable ELF file: ${err.message}`);
      throw err;
    }
  };
  const queue: Array<{ path: string; neededBy: string | undefined }> = programs.map((p) => ({ path: p, neededBy: undefined }));
  while (queue.length > 0) {
    const { path } = queue.shift()!;
    if (objects.has(path)) continue;
    const data = await read(path);
    if (!isElf(data)) continue; // a script: its interpreter is the caller's business
    const info = parse(path, data);
    objects.set(path, { path, info, data });
    if (info.interpreter !== undefined && !objects.has(info.interpreter)) {
      interpreters.add(info.interpreter);
      queue.push({ path: info.interpreter, neededBy: path });
    }
    const is64 = info.elfClass === ELFCLASS64;
    const origin = dirname(await realpath(path));
    const expand = (list: string[]): string[] => list.map((d) => expandDynamicTokens(d, origin, is64));
    const dirs = [
      ...(info.runpath.length === 0 ? expand(info.rpath) : []),
      ...expand(info.runpath),
      ...options.confDirs,
      ...defaultLibraryDirs(is64),
    ];
    for (const name of info.needed) {
      const found = name.includes('/') ? name : await findLibrary(name, dirs, info, read);
      if (found === undefined) {
        throw new StiefelError(
          'E_IMAGE_LIBRARY',
          `${path} needs the shared library ${name}, which is in none of ${[...new Set(dirs)].join(', ')} (does '${path}' run here?)`,
        );
      }
      if (!objects.has(found)) queue.push({ path: found, neededBy: path });
    }
  }
  return { objects, interpreters };
}

async function findLibrary(
  name: string,
  dirs: string[],
  needer: ElfDynamicInfo,
  read: (p: string) => Promise<Buffer>,
): Promise<string | undefined> {
  for (const dir of new Set(dirs)) {
    const candidate = posix.join(dir, name);
    const data = await tryRead(read, candidate);
    if (!data || !isElf(data)) continue;
    try {
      const h = readElfHeader(data);
      if (h.elfClass === needer.elfClass && h.machine === needer.machine) return candidate;
    } catch (err) {
      if (!(err instanceof ElfError)) throw err;
    }
  }
  return undefined;
}
