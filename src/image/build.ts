// Builds stiefelOS: the kernel image copied as it is, and an initramfs made
// of the kernel's modules (a chosen set and their closure, depmod data
// regenerated), the host's programs with their shared libraries, busybox,
// node, the bundled stiefelctl, the config and secret, and /init.
//
// Reproducible: the cpio writer sorts entries and fixes times, owners and
// inode numbers; file modes are normalised; nothing from the clock or the
// build's temporary paths goes in. Atomic: both files are written under
// temporary names in the output directory and renamed at the very end.
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { copyFile, lstat, mkdir, readFile, readlink, realpath, rename, rm, stat, unlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { readAsset } from '../assets';
import { newcChunks } from '../cpio/newc';
import { ElfError, readElfSections } from '../elf/elf';
import { StiefelError, errnoCode } from '../errors';
import { silentLogger, type Logger } from '../log';
import { VERSION } from '../version';
import { DEFAULT_LEVEL, writeCompressed, type Compression } from './compress';
import { ImageTree, ImageTreeError } from './image-tree';
import { kernelZstdSupport, locateKernel, type RdSupport } from './kernel';
import { libraryClosure, readLdSoConfDirs } from './libraries';
import { carryModuleDecompressed, imageModulePath, regenerateDepmod, selectModules } from './modules';
import { PACKAGES, formatPackages } from './packages';
import { forEachLimited } from './for-each-limited';
import { externalBuiltins } from './node-builtins';
import { BUSYBOX, IMAGE_PROGRAMS, IPXE_BOOT_FILES, findProgram, lookupProgram, type ProgramSpec } from './programs';
import type { ProgressCallback } from './progress';

const execFileAsync = promisify(execFile);

/** Where the image goes when neither --out nor (later) the config says. */
export const DEFAULT_IMAGE_DIR = '/var/lib/stiefelsystem/image';

/** Paths inside stiefelOS that other parts of stiefelsystem rely on. */
/** Debian's bundle of CA certificates (ca-certificates). */
export const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
/** The keys a distribution's SHA256SUMS may be signed with (`iso boot --sums`): carried when the laptop has the file. */
export const ISO_KEYRING = '/etc/stiefelsystem/iso-keyring.gpg';

export const IMAGE_PATHS = {
  config: '/etc/stiefelsystem/config.yaml',
  secret: '/etc/stiefelsystem/secret',
  stiefelctl: '/usr/bin/stiefelctl',
  bundle: '/usr/lib/stiefelsystem/stiefelctl.js',
  release: '/etc/stiefelos/release',
} as const;

export interface BuildImageOptions {
  outDir: string;
  /** --kernel; the running kernel's image when undefined. */
  kernel?: string;
  /** `uname -r` of the running kernel (os.release()). */
  runningRelease: string;
  /** --modules-dir; /lib/modules/RELEASE when undefined. */
  modulesDir?: string;
  /** --compress; zstd when the kernel can unpack it, else gzip, when undefined. */
  compress?: Compression;
  compressLevel?: number;
  /** The node binary to carry (the one running stiefelctl). */
  node: string;
  /** The bundled dist/stiefelctl.js to carry. */
  bundle: string;
  /** A config file to embed at /etc/stiefelsystem/config.yaml. */
  config?: string;
  /** A secret file to embed at /etc/stiefelsystem/secret (mode 0600). */
  secret?: string;
  extraModules?: readonly string[];
  excludeModules?: readonly string[];
  extraPrograms?: readonly string[];
  /** Where programs are looked for (see programSearchDirs). */
  searchDirs: readonly string[];
  /** Modification time of every entry (SOURCE_DATE_EPOCH); 0 when undefined. */
  sourceDateEpoch?: number;
  /** Strip symbols from programs that carry them (node); default true when `strip` exists. */
  strip?: boolean;
  firmwareDir?: string;
  /** Directory of kernel images for hints (default /boot). */
  bootDir?: string;
}

export interface BuildContext {
  log?: Logger;
  signal?: AbortSignal;
  progress?: ProgressCallback;
}

export interface ImagePart {
  name: string;
  files: number;
  bytes: number;
}

export interface BuildSummary {
  outDir: string;
  kernel: { source: string; release: string; versionString: string; path: string; bytes: number; sha256: string };
  initrd: {
    path: string;
    bytes: number;
    sha256: string;
    compression: Compression;
    level: number;
    /** Why this compression, e.g. "CONFIG_RD_ZSTD=y in /boot/config-...". */
    compressionReason: string;
    unpackedBytes: number;
    entries: number;
  };
  modules: { count: number; builtin: number; absent: string[]; excluded: number; firmware: number; firmwareMissing: string[] };
  programs: Array<{ name: string; path: string }>;
  libraries: string[];
  stripped: Array<{ path: string; before: number; after: number }>;
  parts: ImagePart[];
  config: string | undefined;
  secret: boolean;
  /** vmlinuz + initrd.img. */
  totalBytes: number;
  seconds: number;
}

const PART = {
  modules: 'kernel modules',
  firmware: 'firmware',
  node: 'node',
  programs: 'programs and libraries',
  busybox: 'busybox',
  stiefelctl: 'stiefelctl',
  pxe: 'iPXE boot files',
  base: 'init, config, /etc',
} as const;

export interface CompressionChoice {
  compression: Compression;
  /** Why, for the summary. */
  reason: string;
  zstd?: string;
  warning?: string;
}

/**
 * zstd when the kernel can unpack it (CONFIG_RD_ZSTD=y) and the zstd program
 * is there, else gzip, which every initramfs-capable kernel unpacks. An
 * explicit --compress is honoured, or refused when the kernel cannot unpack it.
 */
export function chooseCompression(input: {
  requested: Compression | undefined;
  release: string;
  rd: RdSupport;
  /** The zstd program, when installed. */
  zstd: string | undefined;
}): CompressionChoice {
  const { requested, rd, zstd } = input;
  if (requested !== undefined) {
    if (requested === 'zstd' && rd.known && !rd.zstd) {
      throw new StiefelError('E_IMAGE_COMPRESS', `kernel ${input.release} cannot unpack a zstd initramfs (no CONFIG_RD_ZSTD=y in ${rd.source}): use --compress gzip`);
    }
    if (requested === 'zstd' && zstd === undefined) {
      throw new StiefelError('E_IMAGE_TOOL', `'zstd' is not installed: install ${formatPackages(PACKAGES.zstd)}, or use --compress gzip`);
    }
    return { compression: requested, reason: '--compress', zstd: requested === 'zstd' ? zstd : undefined };
  }
  if (!rd.known) return { compression: 'gzip', reason: 'the kernel config was not found, so zstd support is unknown' };
  if (!rd.zstd) return { compression: 'gzip', reason: `no CONFIG_RD_ZSTD=y in ${rd.source}` };
  if (zstd === undefined) {
    return {
      compression: 'gzip',
      reason: 'zstd is not installed',
      warning: `zstd is not installed (${formatPackages(PACKAGES.zstd)}); compressing with gzip instead`,
    };
  }
  return { compression: 'zstd', reason: `CONFIG_RD_ZSTD=y in ${rd.source}`, zstd };
}

/** A reader that reads each file once, keyed by its real path. */
function cachingReader(): { read: (p: string) => Promise<Buffer>; get: (realPath: string) => Buffer | undefined } {
  const byReal = new Map<string, Promise<Buffer>>();
  const done = new Map<string, Buffer>();
  return {
    async read(path) {
      const real = await realpath(path);
      let p = byReal.get(real);
      if (p === undefined) {
        p = readFile(real).then((b) => (done.set(real, b), b));
        byReal.set(real, p);
      }
      return p;
    },
    get: (real) => done.get(real),
  };
}

async function fileMustExist(path: string, what: string, fix: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw new StiefelError('E_IMAGE_INPUT', `${what} ${path} does not exist: ${fix}`);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StiefelError('E_ABORTED', 'build-image was interrupted; nothing was written');
}

type Kernel = Awaited<ReturnType<typeof locateKernel>>;
type Selection = Awaited<ReturnType<typeof selectModules>>;
type Closure = Awaited<ReturnType<typeof libraryClosure>>;
type Program = { spec: ProgramSpec; path: string };

/** Everything the user named, checked before anything is read at length or written. */
async function checkInputs(options: BuildImageOptions): Promise<{ kernel: Kernel; modulesDir: string; programs: Program[]; depmod: string }> {
  await checkOutputDir(options.outDir);
  const kernel = await locateKernel({ kernel: options.kernel, runningRelease: options.runningRelease, bootDir: options.bootDir });
  const modulesDir = options.modulesDir ?? `/lib/modules/${kernel.release}`;
  if (options.config !== undefined) await fileMustExist(options.config, 'config file', "write one with 'stiefelctl init' or fix --config");
  if (options.secret !== undefined) await fileMustExist(options.secret, 'secret file', "write one with 'stiefelctl init' or fix --secret");
  await fileMustExist(options.bundle, 'stiefelctl bundle', "run 'npm run build' or pass --bundle PATH to dist/stiefelctl.js");
  await fileMustExist(options.node, 'node binary', 'pass the path of a node binary');
  const programs: Program[] = [];
  for (const spec of [...IMAGE_PROGRAMS, BUSYBOX]) programs.push({ spec, path: await findProgram(spec, options.searchDirs) });
  for (const name of options.extraPrograms ?? []) programs.push({ spec: { name: posix.basename(name) }, path: await findProgram(name, options.searchDirs) });
  const depmod = await findProgram({ name: 'depmod', packages: PACKAGES.kmod }, options.searchDirs);
  for (const file of IPXE_BOOT_FILES.files) {
    await fileMustExist(posix.join(IPXE_BOOT_FILES.dir, file), 'iPXE boot file', `install ${formatPackages(IPXE_BOOT_FILES.packages)}`);
  }
  return { kernel, modulesDir, programs, depmod };
}

/** The output directory is one, or can be made: said at once, not after the slow steps. */
async function checkOutputDir(outDir: string): Promise<void> {
  for (let dir = outDir; ; dir = posix.dirname(dir)) {
    const st = await stat(dir).catch((err: unknown) => (errnoCode(err) === 'ENOENT' ? undefined : Promise.reject(err)));
    if (st === undefined) {
      if (posix.dirname(dir) === dir) return;
      continue;
    }
    if (!st.isDirectory()) {
      const what = dir === outDir ? `--out ${outDir} is a file, not a directory` : `--out ${outDir} cannot be made: ${dir} is a file`;
      throw new StiefelError('E_IMAGE_OUT', `${what}: choose a directory for vmlinuz and initrd.img with --out DIR`);
    }
    return;
  }
}

interface Packing {
  compression: Compression;
  compressionReason: string;
  zstd: string | undefined;
  level: number;
  stripTool: string | undefined;
}

/** The initramfs's compression (what the kernel can unpack) and the strip tool. */
async function choosePacking(options: BuildImageOptions, kernel: Kernel, modulesDir: string, log: Logger): Promise<Packing> {
  const choice = chooseCompression({
    requested: options.compress,
    release: kernel.release,
    rd: await kernelZstdSupport(kernel, modulesDir),
    zstd: await lookupProgram('zstd', options.searchDirs),
  });
  if (choice.warning !== undefined) log.warn(choice.warning);
  const stripTool = options.strip === false ? undefined : await lookupProgram('strip', options.searchDirs);
  if (options.strip === true && stripTool === undefined) {
    throw new StiefelError('E_IMAGE_TOOL', `'strip' is not installed: install ${formatPackages(PACKAGES.strip)}, or build with --no-strip`);
  }
  return { compression: choice.compression, compressionReason: choice.reason, zstd: choice.zstd, level: options.compressLevel ?? DEFAULT_LEVEL[choice.compression], stripTool };
}

/** Temporary names in the output directory, renamed into place at the very end. */
async function makeWorkDirs(outDir: string): Promise<{ work: string; tmpInitrd: string; tmpKernel: string }> {
  await mkdir(outDir, { recursive: true }).catch((err: unknown) => {
    throw new StiefelError('E_IMAGE_OUT', `cannot create the output directory ${outDir}: ${errnoCode(err) ?? String(err)}`);
  });
  const work = posix.join(outDir, `.stiefel-build-${randomBytes(6).toString('hex')}`);
  await mkdir(work).catch((err: unknown) => {
    throw new StiefelError('E_IMAGE_OUT', `cannot write into the output directory ${outDir}: ${errnoCode(err) ?? String(err)} (choose another --out, or run as root)`);
  });
  return {
    work,
    tmpInitrd: posix.join(outDir, `.initrd.img.${randomBytes(6).toString('hex')}.tmp`),
    tmpKernel: posix.join(outDir, `.vmlinuz.${randomBytes(6).toString('hex')}.tmp`),
  };
}

/**
 * Strips programs and libraries that still carry symbols (the node binary
 * does); never kernel modules, whose signatures that would break. Returns
 * the stripped bytes by real path.
 */
async function stripObjects(closure: Closure, stripTool: string, work: string, ctx: { signal?: AbortSignal; progress: ProgressCallback }): Promise<{ replaced: Map<string, Buffer>; stripped: BuildSummary['stripped'] }> {
  const stripped: BuildSummary['stripped'] = [];
  const replaced = new Map<string, Buffer>();
  for (const obj of closure.objects.values()) {
    let sections;
    try {
      sections = readElfSections(obj.data);
    } catch (err) {
      if (err instanceof ElfError) continue;
      throw err;
    }
    if (!sections.some((s) => s.name === '.symtab' || s.name.startsWith('.debug'))) continue;
    const real = await realpath(obj.path);
    if (replaced.has(real)) continue;
    ctx.progress({ phase: 'strip', message: `stripping ${real}` });
    const out = posix.join(work, `strip-${replaced.size}`);
    try {
      await execFileAsync(stripTool, ['--strip-unneeded', '-o', out, real], { signal: ctx.signal });
    } catch (err) {
      throw new StiefelError('E_IMAGE_STRIP', `strip failed on ${real}: ${String((err as { stderr?: string }).stderr ?? err).trim().split('\n')[0]}`, { cause: err });
    }
    const data = await readFile(out);
    replaced.set(real, data);
    stripped.push({ path: real, before: obj.data.length, after: data.length });
  }
  return { replaced, stripped };
}

/** Reads every host file of the tree once; the cpio entries and the size of each part. */
async function readTree(tree: ImageTree, reader: ReturnType<typeof cachingReader>, replaced: ReadonlyMap<string, Buffer>, progress: ProgressCallback) {
  const hostFiles = [...tree.nodes.values()].flatMap((n) => (n.type === 'file' && n.hostPath !== undefined ? [n.hostPath] : []));
  let readCount = 0;
  await forEachLimited(hostFiles, 16, async (p) => {
    await reader.read(p);
    readCount++;
    progress({ phase: 'read', message: `reading ${hostFiles.length} files`, done: readCount, total: hostFiles.length });
  });
  const realOf = new Map<string, string>();
  for (const p of hostFiles) realOf.set(p, await realpath(p));
  const dataOf = (hostPath: string): Buffer => {
    const real = realOf.get(hostPath)!;
    return replaced.get(real) ?? reader.get(real)!;
  };
  const entries = tree.toCpioEntries(dataOf);
  const parts = new Map<string, ImagePart>();
  for (const node of tree.nodes.values()) {
    if (node.type !== 'file') continue;
    const part = parts.get(node.part) ?? { name: node.part, files: 0, bytes: 0 };
    part.files += 1;
    part.bytes += (node.data ?? dataOf(node.hostPath!)).length;
    parts.set(node.part, part);
  }
  const unpackedBytes = [...parts.values()].reduce((a, p) => a + p.bytes, 0);
  return { entries, parts: [...parts.values()].sort((a, b) => b.bytes - a.bytes), unpackedBytes };
}

export async function buildImage(options: BuildImageOptions, ctx: BuildContext = {}): Promise<BuildSummary> {
  const started = Date.now();
  const log = ctx.log ?? silentLogger;
  const signal = ctx.signal;
  const progress: ProgressCallback = ctx.progress ?? (() => undefined);

  progress({ phase: 'kernel', message: 'reading the kernel image' });
  const { kernel, modulesDir, programs, depmod } = await checkInputs(options);
  const packing = await choosePacking(options, kernel, modulesDir, log);
  throwIfAborted(signal);

  // Modules and libraries are chosen (and every missing one reported) before
  // anything is written.
  const reader = cachingReader();
  progress({ phase: 'modules', message: `choosing modules of ${kernel.release}` });
  const selection: Selection = await selectModules(
    { release: kernel.release, modulesDir, extraModules: options.extraModules, excludeModules: options.excludeModules, firmwareDir: options.firmwareDir, read: reader.read },
    log.child('modules'),
  );
  progress({ phase: 'programs', message: 'finding shared libraries' });
  const closure = await libraryClosure([options.node, ...programs.map((p) => p.path)], { confDirs: await readLdSoConfDirs(), read: reader.read });
  throwIfAborted(signal);

  const { work, tmpInitrd, tmpKernel } = await makeWorkDirs(options.outDir);
  try {
    const carriedPlain = new Map([...selection.decompressed].filter(([p]) => carryModuleDecompressed(p, packing.compression)));
    progress({ phase: 'depmod', message: `regenerating depmod data for ${selection.paths.length} modules` });
    const depmodFiles = await regenerateDepmod(
      { release: kernel.release, modulesDir, paths: selection.paths, decompressed: carriedPlain, stagingDir: posix.join(work, 'depmod'), depmod },
      signal,
    );
    throwIfAborted(signal);

    progress({ phase: 'tree', message: 'laying out the file tree' });
    const tree = new ImageTree();
    const busyboxPath = programs.find((p) => p.spec === BUSYBOX)!.path;
    const nodeBuiltins = await externalBuiltins(options.node);
    const nodeImagePath = await layoutTree(tree, { options, kernelRelease: kernel.release, modulesDir, selection, carriedPlain, depmodFiles, closure, programs, busyboxPath, nodeBuiltins });
    const { replaced, stripped } = packing.stripTool !== undefined ? await stripObjects(closure, packing.stripTool, work, { signal, progress }) : { replaced: new Map<string, Buffer>(), stripped: [] };
    throwIfAborted(signal);
    const { entries, parts, unpackedBytes } = await readTree(tree, reader, replaced, progress);
    throwIfAborted(signal);

    const { compression, level } = packing;
    const packMessage = `cpio, ${compression}${compression === 'none' ? '' : ` -${level}`}`;
    progress({ phase: 'pack', message: packMessage, done: 0, total: unpackedBytes });
    const packed = await writeCompressed(newcChunks(entries, { mtime: options.sourceDateEpoch ?? 0 }), tmpInitrd, {
      method: compression,
      level,
      zstd: packing.zstd,
      // With the secret inside, the initrd is a key to the laptop's disk: root only.
      mode: options.secret !== undefined ? 0o600 : 0o644,
      signal,
      onProgress: (bytesIn) => progress({ phase: 'pack', message: packMessage, done: bytesIn, total: unpackedBytes }),
    });
    throwIfAborted(signal);

    progress({ phase: 'write', message: 'writing vmlinuz and initrd.img' });
    await copyFile(kernel.path, tmpKernel);
    const kernelSha = createHash('sha256').update(await readFile(tmpKernel)).digest('hex');
    const finalKernel = posix.join(options.outDir, 'vmlinuz');
    const finalInitrd = posix.join(options.outDir, 'initrd.img');
    await rename(tmpKernel, finalKernel);
    await rename(tmpInitrd, finalInitrd);

    return {
      outDir: options.outDir,
      kernel: { source: kernel.path, release: kernel.release, versionString: kernel.versionString, path: finalKernel, bytes: kernel.size, sha256: kernelSha },
      initrd: {
        path: finalInitrd,
        bytes: packed.bytesOut,
        sha256: packed.sha256,
        compression,
        level,
        compressionReason: packing.compressionReason,
        unpackedBytes: packed.bytesIn,
        entries: entries.length,
      },
      modules: {
        count: selection.paths.length,
        builtin: selection.builtin.length,
        absent: selection.absent,
        excluded: selection.excluded.length,
        firmware: selection.firmware.length,
        firmwareMissing: selection.firmwareMissing,
      },
      programs: [{ name: 'node', path: nodeImagePath }, ...programs.map((p) => ({ name: p.spec.name, path: p.path }))],
      libraries: [...closure.objects.keys()].filter((k) => k !== options.node && !programs.some((p) => p.path === k)).sort(),
      stripped,
      parts,
      config: options.config,
      secret: options.secret !== undefined,
      totalBytes: kernel.size + packed.bytesOut,
      seconds: (Date.now() - started) / 1000,
    };
  } catch (err) {
    if (err instanceof ImageTreeError) throw new StiefelError('E_IMAGE_TREE', `cannot lay out the image: ${err.message}`, { cause: err });
    if (signal?.aborted && !(err instanceof StiefelError)) {
      throw new StiefelError('E_ABORTED', 'build-image was interrupted; nothing was written', { cause: err });
    }
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
    await unlink(tmpInitrd).catch(() => undefined);
    await unlink(tmpKernel).catch(() => undefined);
  }
}

interface LayoutInput {
  options: BuildImageOptions;
  kernelRelease: string;
  modulesDir: string;
  selection: Selection;
  /** Compressed modules carried decompressed (carryModuleDecompressed), by host path. */
  carriedPlain: ReadonlyMap<string, Buffer>;
  depmodFiles: Map<string, Buffer>;
  closure: Closure;
  programs: Program[];
  busyboxPath: string;
  /** Files holding built-in modules of that node (externalBuiltins). */
  nodeBuiltins: readonly string[];
}

/** Fills the tree; returns the image path of node. */
async function layoutTree(tree: ImageTree, input: LayoutInput): Promise<string> {
  const { options, closure, programs } = input;
  // The top-level directory links of a merged-/usr host come first, so that
  // everything added later under /lib or /bin lands where the host has it.
  for (const d of ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32']) {
    const st = await lstat(`/${d}`).catch(() => undefined);
    if (st?.isSymbolicLink()) tree.addSymlink(d, await readlink(`/${d}`));
  }

  const partOf = (path: string): string => {
    if (path === options.node) return PART.node;
    if (path === input.busyboxPath) return PART.busybox;
    return PART.programs;
  };
  const libraryDirs = new Set<string>();
  for (const obj of closure.objects.values()) {
    await tree.mirrorHostPath(obj.path, partOf(obj.path));
    if (!programs.some((p) => p.path === obj.path) && obj.path !== options.node) libraryDirs.add(posix.dirname(obj.path));
  }
  // Programs that are scripts (an --add-program) are not ELF: mirror them too.
  for (const p of programs) if (!closure.objects.has(p.path)) await tree.mirrorHostPath(p.path, PART.programs);

  const nodeImagePath = `/${tree.resolve(options.node, true)}`;
  if (!tree.exists('usr/bin/node')) tree.addSymlink('usr/bin/node', nodeImagePath);
  // The built-in modules that node reads from other files (Debian's nodejs).
  for (const file of input.nodeBuiltins) await tree.mirrorHostPath(file, PART.node);

  // Multi-call programs: lvm answers to vgchange, lvs, ...
  for (const p of programs) {
    for (const link of p.spec.links ?? []) {
      const at = posix.join(posix.dirname(p.path), link);
      if (!tree.exists(at)) tree.addSymlink(at, posix.basename(p.path));
    }
  }

  // busybox at /bin/busybox (/init calls it there), and its applets wherever
  // no real program of that name is.
  const busyboxImage = `/${tree.resolve(input.busyboxPath, true)}`;
  if (!tree.exists('bin/busybox')) tree.addSymlink('bin/busybox', busyboxImage);
  const { stdout } = await execFileAsync(input.busyboxPath, ['--list-full'], { encoding: 'utf8' });
  const commandDirs = ['usr/sbin', 'usr/bin', 'sbin', 'bin'];
  for (const applet of stdout.split('\n').map((l) => l.trim()).filter(Boolean).sort()) {
    const name = posix.basename(applet);
    if (name === 'init' || name === 'linuxrc' || name === 'busybox') continue;
    if (commandDirs.some((d) => tree.exists(`${d}/${name}`))) continue;
    tree.addSymlink(applet, '/bin/busybox');
  }
  if (!tree.exists('bin/sh')) tree.addSymlink('bin/sh', '/bin/busybox');

  // The root file system's skeleton.
  for (const d of ['dev', 'proc', 'sys', 'run', 'mnt', 'etc', 'var']) tree.mkdir(d);
  tree.mkdir('tmp', 0o1777);
  tree.mkdir('root', 0o700);
  if (!tree.exists('var/run')) tree.addSymlink('var/run', '../run');
  if (!tree.exists('var/tmp')) tree.addSymlink('var/tmp', '../tmp');
  // The kernel opens /dev/console for init before devtmpfs is mounted.
  tree.addDevice('dev/console', 'char', 5, 1, 0o600);
  tree.addDevice('dev/null', 'char', 1, 3, 0o666);

  const asset = (name: string): Buffer => Buffer.from(readAsset(`stiefelos/${name}`), 'utf8');
  tree.addFile('init', { part: PART.base, mode: 0o755, data: asset('init') });
  tree.addFile('usr/lib/stiefelsystem/hotplug', { part: PART.base, mode: 0o755, data: asset('hotplug') });
  for (const f of ['passwd', 'group', 'nsswitch.conf', 'hosts', 'hostname']) {
    tree.addFile(`etc/${f}`, { part: PART.base, data: asset(`etc/${f}`) });
  }
  if (!tree.exists('etc/mtab')) tree.addSymlink('etc/mtab', '/proc/self/mounts');
  tree.addFile(IMAGE_PATHS.release, {
    part: PART.base,
    data: Buffer.from(`stiefelOS (stiefelctl ${VERSION})\nkernel ${input.kernelRelease}\n`),
  });
  tree.addFile('etc/stiefelos/library-path', { part: PART.base, data: Buffer.from(`${[...libraryDirs].sort().join(':')}\n`) });

  tree.addFile(IMAGE_PATHS.stiefelctl, { part: PART.stiefelctl, mode: 0o755, data: asset('stiefelctl') });
  tree.addFile(IMAGE_PATHS.bundle, { part: PART.stiefelctl, hostPath: await realpath(options.bundle) });
  for (const file of IPXE_BOOT_FILES.files) {
    const at = posix.join(IPXE_BOOT_FILES.dir, file);
    tree.addFile(at.slice(1), { part: PART.pxe, mode: 0o644, hostPath: await realpath(at) });
  }
  // The CA roots for an ISO over HTTPS (a Node built to use the system's
  // store has none of its own); carried when the host has them.
  if (await stat(CA_BUNDLE).then((st) => st.isFile(), () => false)) tree.addFile(CA_BUNDLE.slice(1), { part: PART.base, mode: 0o644, hostPath: await realpath(CA_BUNDLE) });
  tree.mkdir('etc/stiefelsystem', 0o755);
  if (options.config !== undefined) tree.addFile(IMAGE_PATHS.config, { part: PART.base, mode: 0o644, hostPath: await realpath(options.config) });
  if (options.secret !== undefined) tree.addFile(IMAGE_PATHS.secret, { part: PART.base, mode: 0o600, hostPath: await realpath(options.secret) });
  if (await stat(ISO_KEYRING).then((st) => st.isFile(), () => false)) tree.addFile(ISO_KEYRING.slice(1), { part: PART.base, mode: 0o644, hostPath: await realpath(ISO_KEYRING) });

  // Kernel modules at /lib/modules/RELEASE, whatever directory they came from.
  const modRoot = `lib/modules/${input.kernelRelease}`;
  // Some compressed ones go in decompressed, as plain .ko (carryModuleDecompressed).
  for (const p of input.selection.paths) {
    const data = input.carriedPlain.get(p);
    if (data !== undefined) tree.addFile(`${modRoot}/${imageModulePath(p)}`, { part: PART.modules, data });
    else tree.addFile(`${modRoot}/${p}`, { part: PART.modules, hostPath: await realpath(posix.join(input.modulesDir, p)) });
  }
  for (const [name, data] of input.depmodFiles) tree.addFile(`${modRoot}/${name}`, { part: PART.modules, data });
  for (const fw of input.selection.firmware) tree.addFile(`lib/firmware/${fw.name}`, { part: PART.firmware, hostPath: fw.hostPath });
  return nodeImagePath;
}
