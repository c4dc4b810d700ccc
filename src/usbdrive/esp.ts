// Builds the stick's ESP as a file of its own, without mounting anything
// (the kernel here may have no vfat): mkfs.vfat makes FAT32 with the
// partition's first LBA as its hidden sectors, mtools (mmd, mcopy) put the
// files in, the syslinux installer writes ldlinux.sys and its boot sector
// through mtools as well, and fsck.vfat checks the result. The file is then
// written at the partition's offset, on an image or a device alike.
import { constants } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { CommandRunner } from '../disk/runner';
import { StiefelError } from '../errors';
import { formatPackages } from '../image/packages';
import type { Logger } from '../log';
import { BOOT_PACKAGES, findProgramInPath } from './boot-files';
import { espBootSectorProblems, decodeFatBootSector } from './fat';
import type { StickLayout } from './layout';
import { ESP_PATHS } from './menu';

export interface EspCopy {
  /** A file on this host. */
  from: string;
  /** Its path on the ESP. */
  to: string;
}

export interface EspText {
  to: string;
  text: string;
}

export interface EspTools {
  mkfs: string;
  mmd: string;
  mcopy: string;
  fsck: string;
  syslinux: string;
}

export async function findEspTools(searchDirs: readonly string[], syslinux: string): Promise<EspTools> {
  const find = async (names: string[], pkg: typeof BOOT_PACKAGES.mtools): Promise<string> => {
    for (const n of names) {
      const p = await findProgramInPath(n, searchDirs, pkg).catch(() => undefined);
      if (p) return p;
    }
    throw new StiefelError('E_USB_TOOL', `${names[0]} is not installed: install ${formatPackages(pkg)}`);
  };
  return {
    mkfs: await find(['mkfs.vfat', 'mkfs.fat'], BOOT_PACKAGES.dosfstools),
    mmd: await find(['mmd'], BOOT_PACKAGES.mtools),
    mcopy: await find(['mcopy'], BOOT_PACKAGES.mtools),
    fsck: await find(['fsck.vfat', 'fsck.fat'], BOOT_PACKAGES.dosfstools),
    syslinux,
  };
}

export interface BuildEspOptions {
  /** The ESP image to create (must not exist). */
  path: string;
  layout: StickLayout;
  volumeId: number;
  label: string;
  copies: readonly EspCopy[];
  texts: readonly EspText[];
  tools: EspTools;
  /** Where text files wait for mcopy (a private directory). */
  workDir: string;
}

export interface EspContext {
  runner: CommandRunner;
  log: Logger;
  signal?: AbortSignal;
}

/** Every directory the files need, parents first. */
export function espDirectories(paths: readonly string[]): string[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) dirs.add(`/${parts.slice(0, i).join('/')}`);
  }
  return [...dirs].sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
}

async function readSector(path: string, at: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(512);
    await fh.read(b, 0, 512, at);
    return b;
  } finally {
    await fh.close();
  }
}

function abortCheck(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new StiefelError('E_ABORTED', 'interrupted while building the stick; nothing was written to the target');
}

async function tool(ctx: EspContext, file: string, args: readonly string[]): Promise<string> {
  abortCheck(ctx.signal);
  ctx.log.debug(`${file} ${args.join(' ')}`);
  const r = await ctx.runner.run(file, args);
  if (r.code !== 0) {
    const detail = (r.stderr.trim() || r.stdout.trim()).split('\n').pop() || `exit code ${r.code}`;
    throw new StiefelError('E_USB_ESP', `building the ESP: ${posix.basename(file)} ${args.join(' ')} failed: ${detail}`);
  }
  return `${r.stdout}${r.stderr}`;
}

export async function buildEsp(o: BuildEspOptions, ctx: EspContext): Promise<void> {
  const { esp } = o.layout;
  const fh = await open(o.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    await fh.truncate(esp.bytes);
  } finally {
    await fh.close();
  }
  const want = { hiddenSectors: esp.firstLba, totalSectors: esp.bytes / 512, volumeId: o.volumeId, label: o.label };
  const checkBootSector = async (after: string): Promise<void> => {
    const problems = espBootSectorProblems(await readSector(o.path, 0), want);
    if (problems.length) throw new StiefelError('E_USB_ESP', `the ESP's boot sector is wrong after ${after}: ${problems.join('; ')}`);
  };

  // -h: BPB_HiddSec must be the partition's first LBA (else it stays 0 and
  // syslinux's boot sector reads the wrong sectors); --mbr=n: no fake
  // partition table inside the file system's boot sector; -g: 32 sectors per
  // track, a divisor of 1 MiB, because mkfs.vfat cuts the file system down to
  // whole tracks (with its default of 63 for larger sizes it would end short
  // of the partition).
  await tool(ctx, o.tools.mkfs, [
    '-F', '32', '-S', '512', '-s', String(esp.clusterBytes / 512), '-R', '32', '-f', '2', '-g', '64/32',
    '-h', String(esp.firstLba), '-n', o.label, '-i', o.volumeId.toString(16).padStart(8, '0'),
    '--mbr=n', o.path,
  ]);
  await checkBootSector('mkfs.vfat');

  const image = ['-i', o.path];
  const all = [...o.copies.map((c) => c.to), ...o.texts.map((t) => t.to)];
  const dirs = espDirectories(all);
  if (dirs.length) await tool(ctx, o.tools.mmd, [...image, ...dirs.map((d) => `::${d}`)]);
  for (const [i, t] of o.texts.entries()) {
    const local = posix.join(o.workDir, `text-${i}`);
    await writeFile(local, t.text, { mode: 0o600 });
    await tool(ctx, o.tools.mcopy, [...image, '-D', 'o', local, `::${t.to}`]);
  }
  for (const c of o.copies) await tool(ctx, o.tools.mcopy, [...image, '-D', 'o', c.from, `::${c.to}`]);

  // ldlinux.sys and the boot sector that loads it; menu.c32 and friends are
  // in the same directory.
  await tool(ctx, o.tools.syslinux, ['--directory', ESP_PATHS.syslinuxDir, '--install', o.path]);
  await checkBootSector('the syslinux installer');
  // The installer patches the boot sector only; FAT32 keeps a copy of it
  // (BPB_BkBootSec) that fsck compares with: make the copy match.
  const boot = await readSector(o.path, 0);
  const decoded = decodeFatBootSector(boot);
  if (!('problem' in decoded)) {
    const w = await open(o.path, 'r+');
    try {
      await w.write(boot, 0, 512, decoded.backupBootSector * 512);
      await w.sync();
    } finally {
      await w.close();
    }
  }

  const report = await tool(ctx, o.tools.fsck, ['-n', o.path]);
  const findings = fsckFindings(report);
  if (findings.length) throw new StiefelError('E_USB_ESP', `fsck.vfat found problems in the ESP: ${findings.join(' ')}`);
}

/** fsck.vfat -n's lines other than its banner and the "N files, A/B clusters" summary. */
export function fsckFindings(report: string): string[] {
  return report
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^fsck\.(fat|vfat) \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l));
}
