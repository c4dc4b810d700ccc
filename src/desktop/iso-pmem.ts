// A downloaded live ISO kept in RAM across kexec (src/iso/pmem.ts says
// how): stiefelOS restarts from its stick with the region set aside, finds
// it as /dev/pmem0, and the ISO's kernel gets the modules that show it the
// same region. A distribution's initramfs lacks those (Debian's, for one,
// has the nvdimm drivers only in the live system's squashfs), so they are
// taken from the ISO's own squashfs, for the ISO's own kernel, and added
// to its initrd as one more cpio archive with a small init that loads them
// and then runs the distribution's /init.
import { promises as fs } from 'node:fs';
import { posix } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { encodeNewc, type CpioEntry } from '../cpio/newc';
import { runChecked, type CommandRunner } from '../disk/runner';
import { StiefelError } from '../errors';
import type { Kexec } from '../kexec/kexec';
import { buildModuleIndex, moduleClosure, resolveModule, type ModuleIndex } from '../kmod/closure';
import { moduleNameFromPath } from '../kmod/depmod-files';
import type { Logger } from '../log';
import type { IsoDistroId } from '../iso/distro';
import { memmapParameter, restartCmdline, type PendingIsoBoot, type PmemRegion } from '../iso/pmem';
import { ESP_LABEL, ESP_PATHS } from '../usbdrive/menu';

const MIB = 1024 * 1024;
/** What rdinit= names in the ISO's kernel: loads the modules, then execs the distribution's /init. */
export const PMEM_INIT = '/stiefel-pmem/init';
/** The modules that make the region /dev/pmem0: the e820 type-12 driver and the block driver, with their dependencies. */
const PMEM_MODULES = ['nd_e820', 'nd_pmem'];
/** Where each distribution keeps its live system (whose /lib/modules has the ISO kernel's modules). */
const SQUASHFS_PATHS: Record<IsoDistroId, readonly string[]> = {
  'debian-live': ['/live/filesystem.squashfs'],
  'ubuntu-casper': ['/casper/minimal.squashfs', '/casper/filesystem.squashfs'],
  arch: ['/arch/x86_64/airootfs.sfs'],
  'fedora-live': ['/LiveOS/squashfs.img'],
  'debian-installer': [],
  unknown: [],
};

export interface PmemContext {
  log: Logger;
  runner: CommandRunner;
  signal?: AbortSignal;
}

/** Restarts stiefelOS from its stick (FAT label STIEFEL) with `p.region` set aside and the request on its command line; returns only if that failed. */
export async function restartWithRegion(p: PendingIsoBoot, kexec: Kexec, ctx: PmemContext): Promise<never> {
  const cmdline = restartCmdline(await fs.readFile('/proc/cmdline', 'utf8'), p);
  const found = await ctx.runner.run('blkid', ['-t', `LABEL=${ESP_LABEL}`, '-o', 'device']);
  const device = found.stdout.split('\n').find((l) => l.startsWith('/dev/'));
  if (!device) throw new StiefelError('E_ISO_PMEM', `the stick (FAT label ${ESP_LABEL}) is not here, and its stiefelOS is what restarts with RAM kept for the ISO: copy the ISO to a USB disk and boot it from there (menu item f)`);
  const dir = '/run/stiefel-stick';
  await fs.mkdir(dir, { recursive: true });
  await runChecked(ctx.runner, 'E_ISO_PMEM', 'mount', ['-t', 'vfat', '-o', 'ro', device, dir]);
  try {
    await kexec.load({ kernel: posix.join(dir, ESP_PATHS.kernel), initrd: posix.join(dir, ESP_PATHS.initrd), cmdline }, ctx);
  } finally {
    await runChecked(ctx.runner, 'E_UMOUNT', 'umount', [dir]).catch(() => undefined);
  }
  ctx.log.info(`restarting stiefelOS with ${p.region.size / MIB} MiB of RAM set aside for the ISO (${memmapParameter(p.region)}); it downloads the ISO there`);
  await kexec.exec(ctx);
  throw new StiefelError('E_KEXEC', 'the restart of stiefelOS did not happen');
}

/** The block device the region shows as (nd_e820 and nd_pmem loaded first), its size checked. */
export async function pmemDevice(region: PmemRegion, ctx: PmemContext, waitMs = 10_000): Promise<string> {
  await ctx.runner.run('modprobe', ['-a', ...PMEM_MODULES]);
  const until = Date.now() + waitMs;
  for (;;) {
    for (const name of (await fs.readdir('/sys/block').catch(() => [] as string[])).filter((n) => /^pmem\d+$/.test(n))) {
      const sectors = Number((await fs.readFile(`/sys/block/${name}/size`, 'utf8').catch(() => '0')).trim());
      if (sectors * 512 === region.size) return `/dev/${name}`;
    }
    if (Date.now() > until) {
      throw new StiefelError('E_ISO_PMEM', `the RAM set aside (${memmapParameter(region)}) did not show up as /dev/pmem0 within ${waitMs / 1000} s: this kernel needs nd_e820 and nd_pmem (CONFIG_X86_PMEM_LEGACY, CONFIG_BLK_DEV_PMEM)`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Module paths in an order insmod can follow: each after what it depends on. */
export function loadOrder(index: ModuleIndex, paths: readonly string[]): string[] {
  const out: string[] = [];
  const done = new Set<string>();
  const visit = (p: string, depth: number): void => {
    if (done.has(p) || depth > 64) return;
    for (const d of index.deps.get(p) ?? []) visit(d, depth + 1);
    done.add(p);
    out.push(p);
  };
  for (const p of paths) visit(p, 0);
  return out;
}

/** The small init that comes first: our modules, then the distribution's own /init, as PID 1 still. */
export function pmemInitScript(modules: readonly string[]): string {
  return [
    '#!/stiefel-pmem/busybox sh',
    '# Added by stiefelOS: the modules that show the ISO, kept in RAM across kexec, as /dev/pmem0;',
    "# then the distribution's own init.",
    `for m in ${modules.join(' ')}; do`,
    '  /stiefel-pmem/busybox insmod "/stiefel-pmem/$m" 2>/dev/null',
    'done',
    'exec /init "$@"',
    '',
  ].join('\n');
}

async function readModule(path: string, work: string, runner: CommandRunner): Promise<Buffer> {
  if (path.endsWith('.ko')) return fs.readFile(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(await fs.readFile(path));
  // xz and zstd: busybox and zstd decompress a copy (the squashfs is read-only).
  const copy = posix.join(work, posix.basename(path));
  const command: [string, string[]] | undefined = path.endsWith('.ko.xz') ? ['busybox', ['unxz', '-f', copy]] : path.endsWith('.ko.zst') ? ['zstd', ['-d', '-q', '-f', '--rm', copy]] : undefined;
  if (!command) throw new StiefelError('E_ISO_PMEM', `cannot read the module ${posix.basename(path)} (compressed in a way stiefelOS does not know)`);
  const plain = copy.replace(/\.(xz|zst)$/, '');
  try {
    await fs.copyFile(path, copy);
    await runChecked(runner, 'E_ISO_PMEM', ...command);
    return await fs.readFile(plain);
  } finally {
    await fs.rm(plain, { force: true });
    await fs.rm(copy, { force: true });
  }
}

/**
 * The cpio archive for the ISO kernel's initrd: the pmem modules of
 * `release` from the ISO's live system, busybox (stiefelOS's own, static)
 * and the init that loads them. Empty when that kernel has them built in.
 */
export async function pmemInitrd(o: { isoDevice: string; distro: IsoDistroId; release: string; workDir: string }, ctx: PmemContext): Promise<Buffer> {
  const medium = posix.join(o.workDir, 'medium');
  const root = posix.join(o.workDir, 'live-root');
  const work = posix.join(o.workDir, 'modules');
  for (const d of [medium, root, work]) await fs.mkdir(d, { recursive: true });
  await runChecked(ctx.runner, 'E_ISO_PMEM', 'mount', ['-t', 'iso9660', '-o', 'ro', o.isoDevice, medium]);
  const tried: string[] = [];
  try {
    for (const sq of SQUASHFS_PATHS[o.distro]) {
      const file = posix.join(medium, sq);
      if (!(await fs.stat(file).catch(() => undefined))?.isFile()) continue;
      tried.push(sq);
      if ((await ctx.runner.run('mount', ['-t', 'squashfs', '-o', 'ro,loop', file, root])).code !== 0) continue;
      try {
        for (const base of ['lib/modules', 'usr/lib/modules']) {
          const dir = posix.join(root, base, o.release);
          const dep = await fs.readFile(posix.join(dir, 'modules.dep'), 'utf8').catch(() => undefined);
          if (dep === undefined) continue;
          const builtin = await fs.readFile(posix.join(dir, 'modules.builtin'), 'utf8').catch(() => '');
          const index = buildModuleIndex({ dep, builtin });
          const roots = PMEM_MODULES.map((m) => ({ m, r: resolveModule(index, m) }));
          const missing = roots.filter(({ r }) => r.paths.length === 0 && !r.builtin).map(({ m }) => m);
          if (missing.length) throw new StiefelError('E_ISO_PMEM', `the ISO's kernel ${o.release} has no ${missing.join(' or ')} module, so it cannot see the ISO kept in RAM: copy the ISO to a USB disk and boot it from there (menu item f)`);
          const paths = loadOrder(index, moduleClosure(index, roots.flatMap(({ r }) => r.paths)).paths);
          if (paths.length === 0) return Buffer.alloc(0);
          const entries: CpioEntry[] = [
            { type: 'dir', path: 'stiefel-pmem', mode: 0o755 },
            { type: 'file', path: 'stiefel-pmem/busybox', data: await fs.readFile('/bin/busybox'), mode: 0o755 },
          ];
          const names: string[] = [];
          for (const p of paths) {
            const name = `${moduleNameFromPath(p)}.ko`;
            names.push(name);
            entries.push({ type: 'file', path: `stiefel-pmem/${name}`, data: await readModule(posix.join(dir, p), work, ctx.runner), mode: 0o644 });
          }
          entries.push({ type: 'file', path: PMEM_INIT.slice(1), data: Buffer.from(pmemInitScript(names)), mode: 0o755 });
          ctx.log.info(`the ISO's kernel ${o.release} gets ${names.join(', ')} from ${sq}, to see the ISO in RAM as /dev/pmem0`);
          return encodeNewc(entries);
        }
      } finally {
        await runChecked(ctx.runner, 'E_UMOUNT', 'umount', [root]).catch(() => undefined);
      }
    }
  } finally {
    await runChecked(ctx.runner, 'E_UMOUNT', 'umount', [medium]).catch(() => undefined);
  }
  throw new StiefelError('E_ISO_PMEM', `found no modules for the ISO's kernel ${o.release} on the ISO (${tried.length ? `looked in ${tried.join(', ')}` : 'no live system image where this distribution keeps it'}), so it could not see the ISO kept in RAM: copy the ISO to a USB disk and boot it from there (menu item f)`);
}
