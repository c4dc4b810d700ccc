// Serves a regular file or a block device through one shared descriptor
// (so every connection sees the same page cache: CAN_MULTI_CONN holds).
//
// Node has no lseek(SEEK_DATA/SEEK_HOLE), fallocate() or ioctl(), and native
// addons are not allowed here, so three things go through small tools of
// util-linux and e2fsprogs, run with the descriptor's /proc path:
//   - holes (base:allocation): `filefrag -v` (FIEMAP), parsed and cached
//     until the next change made through this backend (or for 2 s);
//   - trim: `fallocate --punch-hole`;
//   - large write-zeroes: `fallocate --punch-hole` / `--zero-range`;
// fallocate runs go through a queue: at most two at a time, adjacent ranges
// merged (fallocate-queue.ts).
// A tool run costs about 3.5 ms (measured), so small zeroing is done by
// writing zeroes instead. When a tool is missing or the file system says no,
// the backend degrades honestly: extents report "data" (flags 0, always
// safe), trim does nothing (it is a hint), zeroing writes zeroes, and fast
// zero answers ENOTSUP.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { StiefelError, errnoCode } from '../errors';
import type { Logger } from '../log';
import { silentLogger } from '../log';
import type { Backend, BackendCapabilities, BlockExtent, WriteOptions, ZeroOptions } from './backend';
import { BackendError } from './errno';
import { FallocateQueue, type FallocateMode } from './fallocate-queue';
import { IoModePolicy } from './io-mode';
import { Prefetcher } from './prefetch';
import { NBD_EIO, NBD_ENOTSUP, NBD_STATE_HOLE, NBD_STATE_ZERO } from './protocol';

export interface FileBackendOptions {
  readOnly?: boolean;
  /**
   * Open a block device with O_EXCL, so a device with a mounted file system
   * (or claimed by anyone else) is refused. Default true.
   */
  exclusive?: boolean;
}

/** Zeroing at least this large uses fallocate; smaller ranges are written. */
const FALLOCATE_MIN = 4 * 1024 * 1024;
/** A fast-zero request smaller than this is answered ENOTSUP (a tool run is slower than writing). */
const FAST_ZERO_MIN = 1024 * 1024;
const ZERO_CHUNK = 1024 * 1024;
const EXTENT_MAP_TTL_MS = 2000;
const RESOLVED = Promise.resolve();
/** NBD_CMD_CACHE reads at most this much ahead per request. */
const CACHE_MAX = 64 * 1024 * 1024;

let zeroBuffer: Buffer | undefined;
function zeroes(): Buffer {
  return (zeroBuffer ??= Buffer.alloc(ZERO_CHUNK));
}

type ToolResult = { ok: true; stdout: string } | { ok: false; missing: boolean; message: string };

function runTool(file: string, args: string[]): Promise<ToolResult> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (!err) return resolve({ ok: true, stdout });
      const missing = errnoCode(err) === 'ENOENT';
      resolve({ ok: false, missing, message: (stderr || err.message).trim().split('\n')[0] ?? '' });
    });
  });
}

/** Data ranges [start, end) in bytes, sorted, from `filefrag -v -b512` output. */
export function parseFilefrag(output: string, size: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  const unit = /blocks of (\d+) bytes/.exec(output);
  const bs = unit ? Number(unit[1]) : 512;
  for (const line of output.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):/.exec(line);
    if (!m) continue;
    const start = Number(m[1]) * bs;
    const end = Math.min((Number(m[2]) + 1) * bs, size);
    if (end <= start) continue;
    const last = ranges[ranges.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else ranges.push([start, end]);
  }
  ranges.sort((a, b) => a[0] - b[0]);
  return ranges;
}

/**
 * Extents of [offset, offset+length) given sorted data ranges, holes read as
 * zeroes; at most `maxExtents` of them (the first ones), so a request costs
 * the same however fragmented the file is.
 */
export function extentsFromRanges(
  ranges: ReadonlyArray<readonly [number, number]>,
  offset: number,
  length: number,
  maxExtents = Infinity,
): BlockExtent[] {
  const end = offset + length;
  const out: BlockExtent[] = [];
  /** False once full. */
  const push = (len: number, flags: number): boolean => {
    if (len <= 0) return true;
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += len;
    else if (out.length < maxExtents) out.push({ length: len, flags });
    else return false;
    return true;
  };
  // First range that ends after offset.
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid]![1] <= offset) lo = mid + 1;
    else hi = mid;
  }
  let pos = offset;
  for (let i = lo; i < ranges.length && pos < end; i++) {
    const [s, e] = ranges[i]!;
    if (s > pos) {
      if (!push(Math.min(s, end) - pos, NBD_STATE_HOLE | NBD_STATE_ZERO)) return out;
      pos = Math.min(s, end);
    }
    if (pos < end) {
      const stop = Math.min(e, end);
      if (!push(stop - pos, 0)) return out;
      pos = stop;
    }
  }
  push(end - pos, NBD_STATE_HOLE | NBD_STATE_ZERO);
  return out;
}

interface ExtentMap {
  ranges: Array<[number, number]>;
  takenAt: number;
}

export class FileBackend implements Backend {
  readonly size: number;
  readonly capabilities: BackendCapabilities;
  readonly description: string;
  readonly path: string;
  readonly isBlockDevice: boolean;
  readonly #fd: number;
  #dsyncFd: number | undefined;
  readonly #readOnly: boolean;
  readonly #log: Logger;
  #closed = false;
  // Extent map cache (regular files only).
  #map: ExtentMap | undefined;
  #probe: Promise<ExtentMap | undefined> | undefined;
  #generation = 0;
  #modsInFlight = 0;
  #filefragWorks = true;
  readonly #ioMode = new IoModePolicy();
  // Always on the thread pool: prefetching is what reaches the disk.
  readonly #prefetch = new Prefetcher((buf, pos) => this.#preadAsync(buf, pos));
  // At most two fallocate processes at a time, adjacent ranges merged.
  readonly #fallocates = new FallocateQueue((mode, offset, length) => this.#runFallocate(mode, offset, length), 2);
  #fallocateWorks = true;

  private constructor(path: string, fd: number, size: number, isBlockDevice: boolean, readOnly: boolean, log: Logger) {
    this.path = path;
    this.#fd = fd;
    this.size = size;
    this.isBlockDevice = isBlockDevice;
    this.#readOnly = readOnly;
    this.#log = log;
    this.description = `${path} (${isBlockDevice ? 'block device' : 'file'})`;
    this.capabilities = {
      readOnly,
      flush: true,
      fua: !readOnly,
      trim: !readOnly && !isBlockDevice,
      zero: !readOnly,
      fastZero: !readOnly && !isBlockDevice,
      multiConn: true,
      cache: true,
      extents: !isBlockDevice,
    };
  }

  /** Opens FILE; a missing file, a wrong type or no permission is a StiefelError naming the fix. */
  static async open(path: string, options: FileBackendOptions = {}, ctx: { log?: Logger } = {}): Promise<FileBackend> {
    const readOnly = options.readOnly ?? false;
    const log = ctx.log ?? silentLogger;
    let st: fs.Stats;
    try {
      st = await fs.promises.stat(path);
    } catch (err) {
      throw openError(path, err, readOnly);
    }
    if (!st.isFile() && !st.isBlockDevice()) {
      throw new StiefelError('E_NBD_FILE_TYPE', `${path} is not a regular file or a block device; give a disk image or a device such as /dev/sda`);
    }
    const isBlockDevice = st.isBlockDevice();
    let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
    if (isBlockDevice && (options.exclusive ?? true)) flags |= fs.constants.O_EXCL;
    let fd: number;
    try {
      fd = await new Promise<number>((resolve, reject) => fs.open(path, flags, (err, f) => (err ? reject(err) : resolve(f))));
    } catch (err) {
      throw openError(path, err, readOnly);
    }
    try {
      const size = isBlockDevice ? await blockDeviceSize(fd, st) : (await fs.promises.stat(path)).size;
      log.debug(`opened ${path}: ${size} bytes, ${isBlockDevice ? 'block device' : 'regular file'}${readOnly ? ', read-only' : ''}`);
      return new FileBackend(path, fd, size, isBlockDevice, readOnly, log);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  get #procPath(): string {
    return `/proc/${process.pid}/fd/${this.#fd}`;
  }

  pread(buf: Buffer, offset: number): Promise<void> {
    const t0 = performance.now();
    if (this.#ioMode.sync(buf.length, t0)) {
      try {
        let done = 0;
        while (done < buf.length) {
          const n = fs.readSync(this.#fd, buf, done, buf.length - done, offset + done);
          if (n === 0) throw new BackendError(NBD_EIO, `unexpected end of ${this.path} at ${offset + done} (did it shrink?)`);
          done += n;
        }
      } catch (err) {
        return Promise.reject(err);
      } finally {
        this.#syncTook(t0, buf.length);
      }
      return RESOLVED;
    }
    return this.#preadAsync(buf, offset);
  }

  #preadAsync(buf: Buffer, offset: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const fd = this.#fd;
      let done = 0;
      const step = (): void => {
        fs.read(fd, buf, done, buf.length - done, offset + done, (err, n) => {
          if (err) return reject(err);
          if (n === 0) return reject(new BackendError(NBD_EIO, `unexpected end of ${this.path} at ${offset + done} (did it shrink?)`));
          done += n;
          if (done < buf.length) step();
          else resolve();
        });
      };
      if (buf.length === 0) resolve();
      else step();
    });
  }

  async pwrite(data: readonly Buffer[], offset: number, options: WriteOptions): Promise<void> {
    this.#beginChange();
    try {
      let length = 0;
      for (const d of data) length += d.length;
      const t0 = performance.now();
      if (!options.fua && this.#ioMode.sync(length, t0, true)) {
        try {
          writevAllSync(this.#fd, data, offset);
        } finally {
          this.#syncTook(t0, length);
        }
        return;
      }
      const fd = options.fua ? this.#dsync() : this.#fd;
      await writevAll(fd, data, offset);
    } finally {
      this.#endChange();
    }
  }

  // Page-cache hits are served on the event loop (see io-mode.ts): a call
  // that began at `t0` (performance.now()) is timed with one more clock read.
  #syncTook(t0: number, bytes: number): void {
    const now = performance.now();
    if (this.#ioMode.took(now - t0, bytes, now)) {
      this.#log.debug(`reads/writes of ${this.path} turned slow (disk I/O): using the thread pool for a while`);
    }
  }

  // Every change drops the hole map; a map taken while a change was running is not kept.
  #beginChange(): void {
    this.#modsInFlight++;
    this.#generation++;
    this.#map = undefined;
  }

  #endChange(): void {
    this.#modsInFlight--;
    this.#generation++;
    this.#map = undefined;
  }

  /** A second descriptor with O_DSYNC: an FUA write is durable when it returns, without syncing the whole file. */
  #dsync(): number {
    if (this.#dsyncFd === undefined) {
      this.#dsyncFd = fs.openSync(this.#procPath, fs.constants.O_WRONLY | fs.constants.O_DSYNC);
    }
    return this.#dsyncFd;
  }

  flush(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.#fd, (err) => (err ? reject(err) : resolve())));
  }

  async trim(offset: number, length: number, options: WriteOptions): Promise<void> {
    if (this.isBlockDevice || length === 0) return;
    const ok = await this.#fallocate('--punch-hole', offset, length);
    if (ok && options.fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    if (length === 0) return;
    if (options.fast) {
      if (this.isBlockDevice || length < FAST_ZERO_MIN || !this.#fallocateWorks) {
        throw new BackendError(NBD_ENOTSUP, 'zeroing this range would not be faster than writing it');
      }
      if (!(await this.#fallocate(options.mayTrim ? '--punch-hole' : '--zero-range', offset, length))) {
        throw new BackendError(NBD_ENOTSUP, 'the file system cannot zero this range quickly');
      }
    } else if (this.isBlockDevice || length < FALLOCATE_MIN || !(await this.#fallocate(options.mayTrim ? '--punch-hole' : '--zero-range', offset, length))) {
      await this.#writeZeroBytes(offset, length, options.fua);
      return;
    }
    if (options.fua) await this.flush();
  }

  async #writeZeroBytes(offset: number, length: number, fua: boolean): Promise<void> {
    this.#beginChange();
    try {
      const z = zeroes();
      let pos = offset;
      const end = offset + length;
      while (pos < end) {
        const n = Math.min(z.length, end - pos);
        await writevAll(fua ? this.#dsync() : this.#fd, [n === z.length ? z : z.subarray(0, n)], pos);
        pos += n;
      }
    } finally {
      this.#endChange();
    }
  }

  /** Runs fallocate(1) on the open file; false when it could not (tool missing, unsupported). */
  #fallocate(mode: FallocateMode, offset: number, length: number): Promise<boolean> {
    if (!this.#fallocateWorks) return Promise.resolve(false);
    return this.#fallocates.submit(mode, offset, length);
  }

  async #runFallocate(mode: FallocateMode, offset: number, length: number): Promise<boolean> {
    if (!this.#fallocateWorks) return false;
    this.#beginChange();
    try {
      const r = await runTool('fallocate', [mode, '--offset', String(offset), '--length', String(length), this.#procPath]);
      if (r.ok) return true;
      if (r.missing) {
        this.#fallocateWorks = false;
        this.#log.warn('fallocate (util-linux) is not installed: trim does nothing and zeroing writes zeroes');
      } else {
        this.#log.debug(`fallocate ${mode} ${offset}+${length} failed: ${r.message}`);
      }
      return false;
    } finally {
      this.#endChange();
    }
  }

  // Answered at once; the reading happens in the background, bounded (prefetch.ts).
  cache(offset: number, length: number): Promise<void> {
    this.#prefetch.request(offset, Math.min(length, CACHE_MAX));
    return RESOLVED;
  }

  async extents(offset: number, length: number, maxExtents: number): Promise<BlockExtent[]> {
    if (this.isBlockDevice || !this.#filefragWorks) return [{ length, flags: 0 }];
    let map = this.#map;
    if (!map || Date.now() - map.takenAt > EXTENT_MAP_TTL_MS) {
      this.#map = undefined;
      if (!this.#probe) {
        const probe: Promise<ExtentMap | undefined> = this.#probeMap().finally(() => {
          if (this.#probe === probe) this.#probe = undefined;
        });
        this.#probe = probe;
      }
      map = await this.#probe;
      if (!map) return [{ length, flags: 0 }];
    }
    return extentsFromRanges(map.ranges, offset, length, maxExtents);
  }

  async #probeMap(): Promise<ExtentMap | undefined> {
    const quiet = this.#modsInFlight === 0;
    const generation = this.#generation;
    const takenAt = Date.now();
    const r = await runTool('filefrag', ['-v', '-b512', this.#procPath]);
    if (!r.ok) {
      this.#filefragWorks = false;
      this.#log.warn(
        r.missing
          ? 'filefrag (e2fsprogs) is not installed: block status reports every range as data'
          : `cannot map holes of ${this.path} (${r.message}): block status reports every range as data`,
      );
      return undefined;
    }
    const map = { ranges: parseFilefrag(r.stdout, this.size), takenAt };
    // Keep the map only if nothing changed the file while it was taken.
    if (quiet && generation === this.#generation) this.#map = map;
    this.#log.debug(`mapped ${this.path}: ${map.ranges.length} data extents`);
    return map;
  }

  /**
   * Called when the file was changed from outside this backend (another
   * worker process of the server, tests): the map is dropped, and a map
   * being taken now is neither kept nor given to later requests.
   */
  invalidateExtents(): void {
    this.#map = undefined;
    this.#probe = undefined;
    this.#generation++;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#prefetch.stop();
    const fds = [this.#fd, this.#dsyncFd].filter((f): f is number => f !== undefined);
    for (const fd of fds) await new Promise<void>((resolve) => fs.close(fd, () => resolve()));
  }
}

function writevAll(fd: number, data: readonly Buffer[], offset: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let bufs = data as Buffer[];
    let pos = offset;
    const step = (): void => {
      fs.writev(fd, bufs, pos, (err, n) => {
        if (err) return reject(err);
        pos += n;
        // Short write: drop what was written and go on.
        let skip = n;
        let i = 0;
        while (i < bufs.length && skip >= bufs[i]!.length) skip -= bufs[i++]!.length;
        if (i === bufs.length) return resolve();
        if (n === 0) return reject(new BackendError(NBD_EIO, 'write made no progress'));
        bufs = bufs.slice(i);
        if (skip > 0) bufs[0] = bufs[0]!.subarray(skip);
        step();
      });
    };
    if (data.length === 0) resolve();
    else step();
  });
}

function writevAllSync(fd: number, data: readonly Buffer[], offset: number): void {
  let bufs = data as Buffer[];
  let pos = offset;
  for (;;) {
    const n = fs.writevSync(fd, bufs, pos);
    pos += n;
    let skip = n;
    let i = 0;
    while (i < bufs.length && skip >= bufs[i]!.length) skip -= bufs[i++]!.length;
    if (i === bufs.length) return;
    if (n === 0) throw new BackendError(NBD_EIO, 'write made no progress');
    bufs = bufs.slice(i);
    if (skip > 0) bufs[0] = bufs[0]!.subarray(skip);
  }
}

/** Size of a block device: /sys/dev/block/MAJ:MIN/size (512-byte sectors), or probing reads. */
async function blockDeviceSize(fd: number, st: fs.Stats): Promise<number> {
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((Math.floor(st.rdev / 4096) & 0xfff00) >>> 0);
  try {
    const text = await fs.promises.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
    const sectors = Number(text.trim());
    if (Number.isSafeInteger(sectors) && sectors >= 0) return sectors * 512;
  } catch {
    // No sysfs (a chroot, an odd ramdisk): find the end by reading.
  }
  return probeEndByReading(fd);
}

/** The lowest 512-byte multiple at which a read returns nothing (no lseek in Node). */
export async function probeEndByReading(fd: number): Promise<number> {
  const buf = Buffer.allocUnsafe(512);
  const readsAt = (pos: number): Promise<boolean> =>
    new Promise((resolve) => fs.read(fd, buf, 0, 512, pos, (err, n) => resolve(!err && n > 0)));
  let lo = 0; // sectors known readable below
  let hi = 1;
  while (await readsAt(hi * 512)) {
    lo = hi;
    hi *= 2;
    if (hi > 2 ** 44) break;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await readsAt(mid * 512)) lo = mid;
    else hi = mid;
  }
  return (await readsAt(0)) ? hi * 512 : 0;
}

function openError(path: string, err: unknown, readOnly: boolean): StiefelError {
  const code = errnoCode(err);
  const why: Record<string, string> = {
    ENOENT: `cannot open ${path}: no such file or device; check the path`,
    EACCES: readOnly
      ? `cannot open ${path}: permission denied; run as a user who may read it`
      : `cannot open ${path} for writing: permission denied; run as root or add --read-only`,
    EPERM: `cannot open ${path}: operation not permitted; run as root${readOnly ? '' : ' or add --read-only'}`,
    EROFS: `cannot open ${path} for writing: it is on a read-only file system; add --read-only`,
    EBUSY: `cannot open ${path}: the device is in use (mounted?); unmount it first`,
    EISDIR: `${path} is a directory; give a disk image or a block device`,
    ENXIO: `cannot open ${path}: no such device; check that the disk is present`,
  };
  return new StiefelError('E_NBD_OPEN', why[code ?? ''] ?? `cannot open ${path}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
