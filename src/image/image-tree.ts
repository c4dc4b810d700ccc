// The file tree of the ramdisk before it becomes a cpio archive: directories,
// files (from the host or generated), symlinks and device nodes, each file
// labelled with the part of the image it belongs to (for the summary).
//
// Host programs and libraries are mirrored with their symlinks (on a
// merged-/usr host /lib64/ld-linux-x86-64.so.2 goes through lib64 -> usr/lib64
// and an absolute link to /lib/x86_64-linux-gnu/...), so every path baked into
// them (interpreter, RUNPATH) is valid inside the image as it is on the host.
import { lstat, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import type { CpioEntry } from '../cpio/newc';

export type ImageNode =
  | { type: 'dir'; mode: number }
  | { type: 'file'; mode: number; part: string; hostPath?: string; data?: Buffer }
  | { type: 'symlink'; target: string }
  | { type: 'char' | 'block'; major: number; minor: number; mode: number };

export class ImageTreeError extends Error {}

const MAX_SYMLINKS = 40;

function split(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new ImageTreeError(`image path '${path}' contains '..'`);
  return parts;
}

export class ImageTree {
  readonly #nodes = new Map<string, ImageNode>();

  /** Every node, keyed by its path without a leading slash. */
  get nodes(): ReadonlyMap<string, ImageNode> {
    return this.#nodes;
  }

  get(path: string): ImageNode | undefined {
    return this.#nodes.get(split(path).join('/'));
  }

  /**
   * Resolves symlinks inside the image (in every component, and in the last
   * one too when `followLast`). Returns the path without leading slash.
   */
  resolve(path: string, followLast = false): string {
    let parts = split(path);
    let done: string[] = [];
    let hops = 0;
    while (parts.length > 0) {
      const name = parts.shift()!;
      if (name === '..') {
        done.pop();
        continue;
      }
      const candidate = [...done, name].join('/');
      const node = this.#nodes.get(candidate);
      if (node?.type === 'symlink' && (parts.length > 0 || followLast)) {
        if (++hops > MAX_SYMLINKS) throw new ImageTreeError(`too many symlinks resolving ${path}`);
        const targetParts = node.target.split('/').filter((p) => p !== '' && p !== '.');
        if (node.target.startsWith('/')) done = [];
        parts = [...targetParts, ...parts];
        continue;
      }
      done.push(name);
    }
    return done.join('/');
  }

  #parentDir(path: string): string {
    const resolved = this.resolve(posix.dirname(`/${split(path).join('/')}`), true);
    if (resolved !== '') this.mkdir(resolved);
    return resolved;
  }

  #put(path: string, node: ImageNode): string {
    const parts = split(path);
    if (parts.length === 0) throw new ImageTreeError('cannot replace the image root');
    const parent = this.#parentDir(path);
    const full = parent === '' ? parts[parts.length - 1]! : `${parent}/${parts[parts.length - 1]}`;
    const existing = this.#nodes.get(full);
    if (existing !== undefined) {
      const same =
        existing.type === node.type &&
        (existing.type !== 'symlink' || (node.type === 'symlink' && existing.target === node.target)) &&
        (existing.type !== 'file' || (node.type === 'file' && existing.hostPath !== undefined && existing.hostPath === node.hostPath));
      if (!same) throw new ImageTreeError(`image path /${full} is added twice, differently`);
      if (existing.type === 'dir' && node.type === 'dir') existing.mode = node.mode;
      return full;
    }
    this.#nodes.set(full, node);
    return full;
  }

  /** Creates a directory and its parents (through symlinks). */
  mkdir(path: string, mode = 0o755): string {
    const parts = split(path);
    let prefix = '';
    for (let i = 0; i < parts.length; i++) {
      const here = this.resolve(prefix === '' ? parts[i]! : `${prefix}/${parts[i]}`, true);
      const node = this.#nodes.get(here);
      if (node === undefined) this.#nodes.set(here, { type: 'dir', mode: i === parts.length - 1 ? mode : 0o755 });
      else if (node.type !== 'dir') throw new ImageTreeError(`image path /${here} is a ${node.type}, not a directory`);
      else if (i === parts.length - 1) node.mode = mode;
      prefix = here;
    }
    return prefix;
  }

  addFile(path: string, file: { part: string; mode?: number; hostPath?: string; data?: Buffer }): string {
    if ((file.hostPath === undefined) === (file.data === undefined)) {
      throw new ImageTreeError('a file needs exactly one of hostPath and data');
    }
    return this.#put(path, { type: 'file', mode: file.mode ?? 0o644, part: file.part, hostPath: file.hostPath, data: file.data });
  }

  addSymlink(path: string, target: string): string {
    return this.#put(path, { type: 'symlink', target });
  }

  addDevice(path: string, type: 'char' | 'block', major: number, minor: number, mode = 0o600): string {
    return this.#put(path, { type, major, minor, mode });
  }

  /**
   * Adds a host file at the same path, with every symlink on the way
   * (directory links like lib -> usr/lib and the file's own links).
   * Returns the path of the regular file in the image.
   */
  async mirrorHostPath(hostPath: string, part: string, mode?: (hostMode: number) => number): Promise<string> {
    let pending = split(hostPath);
    let real: string[] = [];
    let hops = 0;
    while (pending.length > 0) {
      const name = pending.shift()!;
      if (name === '..') {
        real.pop();
        continue;
      }
      const here = [...real, name].join('/');
      const st = await lstat(`/${here}`);
      if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINKS) throw new ImageTreeError(`too many symlinks resolving ${hostPath}`);
        const target = await readlink(`/${here}`);
        this.#put(here, { type: 'symlink', target });
        if (target.startsWith('/')) real = [];
        pending = [...target.split('/').filter((p) => p !== '' && p !== '.'), ...pending];
        continue;
      }
      if (pending.length > 0) {
        if (!st.isDirectory()) throw new ImageTreeError(`/${here} is not a directory`);
        if (this.#nodes.get(here) === undefined) this.#nodes.set(here, { type: 'dir', mode: 0o755 });
        real.push(name);
        continue;
      }
      if (!st.isFile()) throw new ImageTreeError(`/${here} is not a regular file`);
      const fileMode = mode ? mode(st.mode) : st.mode & 0o111 ? 0o755 : 0o644;
      return this.#put(here, { type: 'file', mode: fileMode, part, hostPath: `/${here}` });
    }
    throw new ImageTreeError(`${hostPath} names a directory`);
  }

  /** Whether `path` (through symlinks) names something in the image. */
  exists(path: string): boolean {
    return this.#nodes.has(this.resolve(path, true));
  }

  /** Unpacked bytes per part, for files whose size is known (data or sizes given). */
  partSizes(sizeOf: (path: string, node: Extract<ImageNode, { type: 'file' }>) => number): Map<string, number> {
    const out = new Map<string, number>();
    for (const [path, node] of this.#nodes) {
      if (node.type === 'file') out.set(node.part, (out.get(node.part) ?? 0) + sizeOf(path, node));
    }
    return out;
  }

  /** The cpio entries; `dataOf` supplies the bytes of host files. */
  toCpioEntries(dataOf: (hostPath: string) => Buffer): CpioEntry[] {
    const out: CpioEntry[] = [];
    for (const [path, node] of this.#nodes) {
      switch (node.type) {
        case 'dir':
          out.push({ type: 'dir', path, mode: node.mode });
          break;
        case 'file':
          out.push({ type: 'file', path, mode: node.mode, data: node.data ?? dataOf(node.hostPath!) });
          break;
        case 'symlink':
          out.push({ type: 'symlink', path, target: node.target });
          break;
        default:
          out.push({ type: node.type, path, major: node.major, minor: node.minor, mode: node.mode });
      }
    }
    return out;
  }
}
