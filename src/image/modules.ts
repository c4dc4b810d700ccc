// Chooses the kernel modules for stiefelOS, with their dependency closure and
// the firmware they declare, and regenerates depmod's data for that subset by
// running the real depmod(8) on a staging tree of symlinks.
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir, realpath, stat, symlink, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { StiefelError, errnoCode } from '../errors';
import type { Logger } from '../log';
import { ElfError, readElfSection } from '../elf/elf';
import { buildModuleIndex, moduleClosure, resolveModule, type ModuleIndex } from '../kmod/closure';
import { DepmodParseError, filterModulesOrder, modinfoFirmware, parseModinfo } from '../kmod/depmod-files';
import { MODULE_GROUPS, type ModuleGroup } from './module-groups';
import { kernelModulesPackages, formatPackages, PACKAGES } from './packages';
import { forEachLimited } from './for-each-limited';
import type { Compression } from './compress';

const execFileAsync = promisify(execFile);

export interface ModuleSelectionOptions {
  release: string;
  /** /lib/modules/RELEASE or what --modules-dir says. */
  modulesDir: string;
  /** Extra modules the user asked for (--add-module): each must exist. */
  extraModules?: readonly string[];
  /** Modules to leave out (--exclude-module): names, or directory prefixes such as kernel/drivers/net/ethernet/mellanox/. */
  excludeModules?: readonly string[];
  groups?: readonly ModuleGroup[];
  /** Where firmware is looked for; /lib/firmware by default. */
  firmwareDir?: string;
  /** Reads a file (the builder passes a caching reader). */
  read?: (path: string) => Promise<Buffer>;
}

export interface FirmwareFile {
  /** Name relative to /lib/firmware, as the module declares it (plus .xz/.zst when compressed). */
  name: string;
  hostPath: string;
}

export interface ModuleSelection {
  index: ModuleIndex;
  /** Module paths relative to the modules directory, sorted. */
  paths: string[];
  /**
   * The bytes of every chosen module that is stored compressed on the host
   * (.ko.gz, .ko.xz, .ko.zst), decompressed, keyed by its entry in `paths`
   * (see carryModuleDecompressed for which the image carries so).
   */
  decompressed: Map<string, Buffer>;
  /** Wanted names found built into the kernel (nothing to carry). */
  builtin: string[];
  /** Wanted optional names this kernel has neither as module nor built in. */
  absent: string[];
  firmware: FirmwareFile[];
  /** Declared firmware that is not installed on this host. */
  firmwareMissing: string[];
  /** Modules --exclude-module took out of the wanted set (a dependency of another module stays). */
  excluded: string[];
}

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

/** Reads depmod's files from a modules directory; a missing modules.dep is the user's problem, said in one line. */
export async function readModuleIndex(modulesDir: string, release: string): Promise<ModuleIndex> {
  const dep = await readOptional(posix.join(modulesDir, 'modules.dep'));
  if (dep === undefined) {
    const exists = await stat(modulesDir).then(
      () => true,
      () => false,
    );
    throw new StiefelError(
      'E_IMAGE_MODULES_DIR',
      exists
        ? `${modulesDir} has no modules.dep: run 'depmod ${release}' as root, or pass --modules-dir DIR`
        : `no kernel modules for ${release} at ${modulesDir}: install ${kernelModulesPackages(release)}, or pass --modules-dir DIR`,
    );
  }
  const [builtin, alias, softdep, builtinModinfo] = await Promise.all(
    ['modules.builtin', 'modules.alias', 'modules.softdep', 'modules.builtin.modinfo'].map((n) =>
      readOptional(posix.join(modulesDir, n)),
    ),
  );
  try {
    return buildModuleIndex({
      dep: dep.toString('utf8'),
      builtin: builtin?.toString('utf8'),
      alias: alias?.toString('utf8'),
      softdep: softdep?.toString('utf8'),
      builtinModinfo,
    });
  } catch (err) {
    if (err instanceof DepmodParseError) throw new StiefelError('E_IMAGE_MODULES_DIR', `${modulesDir}: ${err.message}`);
    throw err;
  }
}

const MODULE_COMPRESSION_SUFFIX = /\.(gz|xz|zst)$/;

/** Whether a module file is stored compressed (.ko.gz, .ko.xz, .ko.zst). */
export function isCompressedModule(path: string): boolean {
  return MODULE_COMPRESSION_SUFFIX.test(path);
}

/** The name a module has in the image, where it is stored uncompressed: foo.ko.xz -> foo.ko. */
export function imageModulePath(path: string): string {
  return path.replace(MODULE_COMPRESSION_SUFFIX, '');
}

/**
 * Whether a module stored compressed on the host goes into an initramfs
 * compressed with `outer` as a plain .ko. Measured on the 343 modules of
 * stiefelOS (BENCHMARKS.md): under zstd -9, modules compressed one by one with
 * zstd -3 (the kernel's `modules_install` default) make a bigger initrd than
 * plain ones, which the outer zstd compresses across; with zstd -19 it is a
 * draw; xz per module (Debian 13, Fedora) beats the outer zstd, so those stay
 * as they are. gzip per module (not measured: Debian's depmod cannot index
 * .ko.gz) compresses worse than zstd -3, and gzip inside gzip only wastes.
 * With no outer compression every module stays compressed.
 */
export function carryModuleDecompressed(path: string, outer: Compression): boolean {
  if (outer === 'zstd') return path.endsWith('.gz') || path.endsWith('.zst');
  if (outer === 'gzip') return path.endsWith('.gz');
  return false;
}

/** A module's bytes, decompressed when the file is .ko.gz, .ko.xz or .ko.zst. */
export async function readModuleElf(path: string, read: (p: string) => Promise<Buffer>): Promise<Buffer> {
  const data = await read(path);
  if (path.endsWith('.gz')) return gunzipSync(data);
  if (path.endsWith('.xz') || path.endsWith('.zst')) {
    const tool = path.endsWith('.xz') ? 'xz' : 'zstd';
    try {
      const { stdout } = await execFileAsync(tool, ['-dc', path], { encoding: 'buffer', maxBuffer: 256 << 20 });
      return stdout;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        throw new StiefelError('E_IMAGE_TOOL', `${path} is compressed and '${tool}' is not installed: install ${formatPackages(tool === 'xz' ? { debian: 'xz-utils', fedora: 'xz', arch: 'xz' } : PACKAGES.zstd)}`);
      }
      throw err;
    }
  }
  return data;
}

export async function selectModules(options: ModuleSelectionOptions, log: Logger): Promise<ModuleSelection> {
  const read = options.read ?? ((p: string) => readFile(p));
  const index = await readModuleIndex(options.modulesDir, options.release);
  const roots = new Set<string>();
  const builtin: string[] = [];
  const absent: string[] = [];
  const allPaths = [...index.deps.keys()];
  const missingRequired = (name: string, why: string): StiefelError =>
    new StiefelError(
      'E_IMAGE_MODULE',
      `module '${name}' does not exist for kernel ${options.release} (${why}; not in ${options.modulesDir}/modules.dep or modules.builtin)` +
        (name === 'wireguard' ? `: kernels before 5.6 need 'wireguard-dkms' (Debian, Arch)` : ''),
    );
  const requiredPaths = new Set<string>();
  const want = (name: string, required: boolean, why: string): void => {
    const r = resolveModule(index, name);
    for (const p of r.paths) {
      roots.add(p);
      if (required) requiredPaths.add(p);
    }
    if (r.paths.length === 0) {
      if (r.builtin) builtin.push(name);
      else if (required) throw missingRequired(name, why);
      else absent.push(name);
    }
  };
  for (const group of options.groups ?? MODULE_GROUPS) {
    for (const dir of group.dirs ?? []) for (const p of allPaths) if (p.startsWith(dir)) roots.add(p);
    for (const n of group.names ?? []) want(n, false, group.name);
    for (const n of group.required ?? []) want(n, true, `stiefelOS needs it for ${group.name}`);
  }
  const excluded = new Set<string>();
  for (const ex of options.excludeModules ?? []) {
    const prefix = ex.replace(/^\/+/, '');
    const matches = ex.includes('/') ? allPaths.filter((p) => p.startsWith(prefix)) : resolveModule(index, ex).paths;
    if (matches.length === 0) {
      throw new StiefelError('E_IMAGE_MODULE', `--exclude-module ${ex} matches no module of kernel ${options.release} in ${options.modulesDir}`);
    }
    for (const p of matches) {
      if (requiredPaths.has(p)) throw new StiefelError('E_IMAGE_MODULE', `--exclude-module ${ex} would leave out ${p}, which stiefelOS needs`);
      if (roots.delete(p)) excluded.add(p);
    }
  }
  for (const n of options.extraModules ?? []) want(n, true, 'asked for with --add-module');
  let closure;
  try {
    closure = moduleClosure(index, roots);
  } catch (err) {
    if (err instanceof DepmodParseError) throw new StiefelError('E_IMAGE_MODULES_DIR', `${options.modulesDir}/modules.dep: ${err.message}`);
    throw err;
  }
  if (closure.unresolvedSoftdeps.length > 0) log.debug(`soft dependencies not in this kernel: ${closure.unresolvedSoftdeps.join(' ')}`);
  if (absent.length > 0) log.debug(`wanted modules this kernel does not have: ${absent.join(' ')}`);

  const firmwareDir = options.firmwareDir ?? '/lib/firmware';
  const declared = new Set<string>();
  const vermagics = new Map<string, string>();
  const decompressed = new Map<string, Buffer>();
  await forEachLimited(closure.paths, 8, async (p) => {
    const elf = await readModuleElf(posix.join(options.modulesDir, p), read);
    if (isCompressedModule(p)) decompressed.set(p, elf);
    let modinfo: Uint8Array | undefined;
    try {
      modinfo = readElfSection(elf, '.modinfo');
    } catch (err) {
      if (err instanceof ElfError) throw new StiefelError('E_IMAGE_MODULE', `${p} is not a readable kernel module: ${err.message}`);
      throw err;
    }
    for (const fw of modinfo ? modinfoFirmware(modinfo) : []) declared.add(fw);
    const vermagic = modinfo ? parseModinfo(modinfo).find((e) => e.key === 'vermagic')?.value : undefined;
    if (vermagic !== undefined) vermagics.set(p, vermagic.split(' ')[0]!);
  });
  // A module loads only into the kernel it was built for (its vermagic).
  for (const [p, release] of [...vermagics].sort()) {
    if (release !== options.release) {
      throw new StiefelError(
        'E_IMAGE_MODULES_DIR',
        `the modules in ${options.modulesDir} were built for kernel ${release} (${p}), not ${options.release}: pass --modules-dir /lib/modules/${options.release} or the --kernel they belong to`,
      );
    }
  }
  const firmware: FirmwareFile[] = [];
  const firmwareMissing: string[] = [];
  // The kernel's own search order (drivers/base/firmware_loader/main.c, fw_path[]).
  const fwDirs = [`${firmwareDir}/updates/${options.release}`, `${firmwareDir}/updates`, `${firmwareDir}/${options.release}`, firmwareDir];
  for (const fw of [...declared].sort()) {
    let found = false;
    for (const dir of fwDirs) {
      // The first of these the kernel would try; one copy only.
      for (const suffix of ['', '.zst', '.xz']) {
        const host = posix.join(dir, fw + suffix);
        const st = await stat(host).catch(() => undefined);
        if (st?.isFile()) {
          firmware.push({ name: posix.relative(firmwareDir, host), hostPath: await realpath(host) });
          found = true;
          break;
        }
      }
      if (found) break;
    }
    if (!found) firmwareMissing.push(fw);
  }
  return { index, paths: closure.paths, decompressed, builtin, absent, firmware, firmwareMissing, excluded: [...excluded].filter((p) => !closure.paths.includes(p)).sort() };
}

export interface DepmodOptions {
  release: string;
  modulesDir: string;
  /** Module paths relative to modulesDir. */
  paths: readonly string[];
  /**
   * Decompressed bytes of compressed modules the image carries as plain .ko
   * files: these are indexed under their .ko names.
   */
  decompressed?: ReadonlyMap<string, Buffer>;
  /** An empty directory to stage in (removed by the caller). */
  stagingDir: string;
  depmod: string;
}

/**
 * Runs `depmod -b STAGING RELEASE` on a tree of symlinks to the chosen
 * modules (decompressed copies of compressed ones) and returns the files it
 * wrote (modules.dep, modules.alias and their .bin indexes, ...), plus modules.builtin* copied and modules.order
 * filtered. The host's /etc/depmod.d is not used (`-C` points at an empty
 * directory) so the result depends only on the modules.
 */
export async function regenerateDepmod(options: DepmodOptions, signal?: AbortSignal): Promise<Map<string, Buffer>> {
  const { release, modulesDir, stagingDir } = options;
  // usr/lib/modules with lib -> usr/lib: whichever of /lib/modules and
  // /usr/lib/modules this depmod was built for, it finds the tree.
  const base = posix.join(stagingDir, 'usr/lib/modules', release);
  await mkdir(base, { recursive: true });
  await symlink('usr/lib', posix.join(stagingDir, 'lib'));
  const confDir = posix.join(stagingDir, 'depmod.d');
  await mkdir(confDir);
  const imagePaths: string[] = [];
  for (const p of options.paths) {
    const data = options.decompressed?.get(p);
    const imagePath = data === undefined ? p : imageModulePath(p);
    imagePaths.push(imagePath);
    const target = posix.join(base, imagePath);
    await mkdir(posix.dirname(target), { recursive: true });
    if (data === undefined) await symlink(await realpath(posix.join(modulesDir, p)), target);
    else await writeFile(target, data);
  }
  const copied = new Map<string, Buffer>();
  for (const name of ['modules.builtin', 'modules.builtin.modinfo']) {
    const data = await readOptional(posix.join(modulesDir, name));
    if (data !== undefined) copied.set(name, data);
  }
  const order = await readOptional(posix.join(modulesDir, 'modules.order'));
  if (order !== undefined) copied.set('modules.order', Buffer.from(filterModulesOrder(order.toString('utf8'), imagePaths)));
  for (const [name, data] of copied) await writeFile(posix.join(base, name), data);
  try {
    await execFileAsync(options.depmod, ['-b', stagingDir, '-C', confDir, release], { signal });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new StiefelError('E_IMAGE_TOOL', `'depmod' is not installed: install ${formatPackages(PACKAGES.kmod)}`);
    }
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new StiefelError('E_IMAGE_DEPMOD', `depmod failed on the chosen modules: ${stderr.trim().split('\n')[0] ?? String(err)}`, { cause: err });
  }
  const out = new Map<string, Buffer>(copied);
  for (const name of (await readdir(base)).sort()) {
    if (name.startsWith('modules.') && !out.has(name)) out.set(name, await readFile(posix.join(base, name)));
  }
  if (!out.has('modules.dep')) throw new StiefelError('E_IMAGE_DEPMOD', `depmod wrote no modules.dep under ${stagingDir}`);
  return out;
}
