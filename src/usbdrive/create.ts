// create-usbdrive as a sequence of named steps: look at the target, find the
// boot loaders, get stiefelOS, lay the stick out, show it (and stop there on
// a dry run), ask, build the ESP in a private directory, write, verify.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { posix } from 'node:path';
import type { Config } from '../config';
import type { CommandRunner } from '../disk/runner';
import { StiefelError, UsageError } from '../errors';
import { buildImage, type BuildImageOptions } from '../image/build';
import type { ProgressCallback } from '../image/progress';
import type { Logger } from '../log';
import { formatBytes } from '../progress';
import { findBootFiles, type BootFiles } from './boot-files';
import { buildEsp, findEspTools } from './esp';
import { GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE, GPT_TYPE_ESP, encodeGpt, guidFromRandom } from './gpt';
import { formatMiB, planStick, StickSizeError, type EspFile, type StickLayout } from './layout';
import { ESP_LABEL, ESP_PATHS, MENU_TIMEOUT_S, loaderConf, loaderEntry, loaderEntryFileName, stickMenu, stickReadme, syslinuxConfig, type MenuEntry } from './menu';
import { checkStiefelOsImage, stickConfigText, type StiefelOsFiles } from './stiefelos';
import { describeDisk, diskInUse, inspectDisk, looksRemovable, readDiskContents, resolveTarget, type BlockNode, type Target } from './target';
import { writeDisk, writeImageFile, type WriteProgress } from './writer';

export interface LoadedConfig {
  config: Config;
  /** The config file's text and path (it goes into a stiefelOS built here). */
  text: string;
  file: string;
  secret: Buffer;
}

export interface CreateUsbDriveOptions {
  target: string;
  /** Reads the config and the secret; called once the target passed its checks. */
  loadConfig: () => Promise<LoadedConfig>;
  /** --image DIR; undefined: build stiefelOS now. */
  imageDir?: string;
  /** What build-image needs when stiefelOS is built here (outDir, config and secret are filled in). */
  build?: Omit<BuildImageOptions, 'outDir' | 'config' | 'secret'>;
  /** --size in bytes. */
  sizeBytes?: number;
  yes: boolean;
  dryRun: boolean;
  isRoot: boolean;
  searchDirs: readonly string[];
  /** Private temporary files go below this (default os.tmpdir()). */
  tmpDir?: string;
}

export interface CreateUsbDriveContext {
  log: Logger;
  signal?: AbortSignal;
  runner: CommandRunner;
  /** The layout and the summary (stdout). */
  out: (text: string) => void;
  /** Asks yes/no on the terminal; null when there is none. */
  confirm: (question: string) => Promise<boolean | null>;
  /** Build progress (build-image's display). */
  buildProgress?: ProgressCallback;
  /** Write progress. */
  writeProgress?: (p: WriteProgress) => void;
}

export interface CreateUsbDriveResult {
  target: Target;
  layout: StickLayout;
  written: boolean;
  seconds: number;
}

export const SECRET_NOTE = "the stick holds the shared secret inside stiefelOS: it is a key to the laptop's disk, keep it like one";

interface Prepared {
  target: Target;
  disk?: BlockNode;
  boot: BootFiles;
  os: StiefelOsFiles;
  menu: MenuEntry[];
  layout: StickLayout;
}

/** Step 1: what TARGET is, and for a disk whether it may be written at all. */
async function lookAtTarget(o: CreateUsbDriveOptions, ctx: CreateUsbDriveContext): Promise<{ target: Target; disk?: BlockNode }> {
  const target = await resolveTarget(o.target);
  if (target.kind === 'image') return { target };
  if (!o.isRoot && !o.dryRun) throw new StiefelError('E_NEEDS_ROOT', `writing the disk ${target.path} needs root: run it with sudo (or write an image file and copy that)`);
  if (target.logicalBlockSize !== 512) {
    throw new StiefelError('E_USB_TARGET', `${target.path} has ${target.logicalBlockSize}-byte sectors; the stick layout is for 512-byte sectors (every USB stick has them): use another stick`);
  }
  if (target.readOnly && !o.dryRun) throw new StiefelError('E_USB_TARGET', `${target.path} is read-only (a write-protect switch?): unlock it and run again`);
  const { disk, swaps } = await inspectDisk(target.device, ctx.runner);
  const busy = diskInUse(disk, swaps);
  if (busy.length) throw new StiefelError('E_USB_BUSY', `refusing to write ${target.path}: ${busy.join('; ')}`);
  return { target, disk };
}

/** Step 3: stiefelOS, from --image or built now into `work`. */
async function getStiefelOs(o: CreateUsbDriveOptions, cfg: LoadedConfig, ctx: CreateUsbDriveContext, work: string): Promise<StiefelOsFiles> {
  if (o.imageDir !== undefined) {
    const os = await checkStiefelOsImage(o.imageDir, cfg.secret, { signal: ctx.signal });
    ctx.log.info(`stiefelOS from ${o.imageDir}: kernel ${os.release}, initrd ${formatBytes(os.initrdBytes)}, with this config's secret`);
    return os;
  }
  if (!o.build) throw new Error('createUsbDrive: neither imageDir nor build options');
  const configPath = posix.join(work, 'config.yaml');
  await writeFile(configPath, stickConfigText(cfg.text, cfg.file), { mode: 0o600 });
  const outDir = posix.join(work, 'stiefelos');
  ctx.log.info('building stiefelOS for the stick (build-image, with the config and the secret)');
  const summary = await buildImage({ ...o.build, outDir, config: configPath, secret: cfg.config.secret }, { log: ctx.log.child('image'), signal: ctx.signal, progress: ctx.buildProgress });
  ctx.log.info(`stiefelOS built in ${summary.seconds.toFixed(1)} s: kernel ${summary.kernel.release}, initrd ${formatBytes(summary.initrd.bytes)}`);
  return {
    vmlinuz: posix.join(outDir, 'vmlinuz'),
    initrd: posix.join(outDir, 'initrd.img'),
    release: summary.kernel.release,
    vmlinuzBytes: summary.kernel.bytes,
    initrdBytes: summary.initrd.bytes,
  };
}

interface EspPlan {
  copies: { from: string; to: string }[];
  texts: { to: string; text: string }[];
}

function espContents(boot: BootFiles, os: StiefelOsFiles, menu: MenuEntry[]): EspPlan {
  const copies = [
    { from: boot.systemdBoot, to: ESP_PATHS.efiBoot },
    ...[...boot.syslinuxModules].map(([name, from]) => ({ from, to: `${ESP_PATHS.syslinuxDir}/${name}` })),
    { from: os.vmlinuz, to: ESP_PATHS.kernel },
    { from: os.initrd, to: ESP_PATHS.initrd },
  ];
  const texts = [
    { to: ESP_PATHS.syslinuxCfg, text: syslinuxConfig(menu) },
    { to: ESP_PATHS.loaderConf, text: loaderConf(menu) },
    ...menu.map((e, i) => ({ to: `${ESP_PATHS.loaderEntries}/${loaderEntryFileName(e, i)}`, text: loaderEntry(e, i) })),
    { to: ESP_PATHS.readme, text: stickReadme() },
  ];
  return { copies, texts };
}

async function espFileSizes(plan: EspPlan): Promise<EspFile[]> {
  const files: EspFile[] = [];
  for (const c of plan.copies) files.push({ path: c.to, size: (await stat(c.from)).size });
  for (const t of plan.texts) files.push({ path: t.to, size: Buffer.byteLength(t.text) });
  return files;
}

/** The layout as the person reads it before anything happens. */
export function formatLayout(p: { target: Target; disk?: BlockNode; boot: BootFiles; os: StiefelOsFiles; menu: MenuEntry[]; layout: StickLayout }): string {
  const { layout: l } = p;
  const where =
    p.target.kind === 'image'
      ? `image file ${p.target.path} (${formatMiB(l.diskBytes)}, mode 0600${p.target.existingBytes !== undefined ? ', replacing the file there' : ''})`
      : `disk ${p.target.path}${p.target.path !== p.target.device ? ` (${p.target.device})` : ''}, ${formatBytes(l.diskBytes)}`;
  const espEnd = l.esp.offset + l.esp.bytes;
  const rows: [string, string][] = [
    ['LBA 0', `protective MBR with syslinux's gptmbr.bin (boots BIOS PCs)`],
    ['LBA 1-33', 'GPT header and partition entries (the backup copy in the last 33 sectors)'],
    [`${formatMiB(l.esp.offset)} - ${formatMiB(espEnd)}`, `partition 1: EFI system partition, FAT32 '${ESP_LABEL}', legacy BIOS bootable, ${formatMiB(l.esp.bytes)}`],
  ];
  const tail: [string, string][] = p.target.kind === 'disk' && l.diskBytes - espEnd > 2 * 1024 * 1024 ? [[`${formatMiB(espEnd)} - end`, 'left unallocated']] : [];
  const width = Math.max(...[...rows, ...tail].map(([k]) => k.length));
  const files: [string, string][] = [
    [ESP_PATHS.efiBoot, `${p.boot.systemdBootVersion ?? 'systemd-boot'} (UEFI, removable-media path)`],
    [`${ESP_PATHS.loaderEntries}/`, `systemd-boot menu: ${p.menu.length} entries, ${MENU_TIMEOUT_S} s`],
    [`${ESP_PATHS.syslinuxDir}/`, `${p.boot.syslinuxVersion ?? 'syslinux'} (BIOS) with menu.c32: ${p.menu.length} entries, ${MENU_TIMEOUT_S} s, also on ttyS0`],
    [ESP_PATHS.kernel, `Linux ${p.os.release}, ${formatBytes(p.os.vmlinuzBytes)}`],
    [ESP_PATHS.initrd, `stiefelOS with the config and the secret, ${formatBytes(p.os.initrdBytes)}`],
  ];
  const fw = Math.max(...files.map(([k]) => k.length));
  const lines = [`stick on the ${where}, GPT:`];
  for (const [k, v] of rows) lines.push(`  ${k.padEnd(width)}  ${v}`);
  for (const [k, v] of files) lines.push(`  ${''.padEnd(width)}    ${k.padEnd(fw)}  ${v}`);
  for (const [k, v] of tail) lines.push(`  ${k.padEnd(width)}  ${v}`);
  lines.push('menu:');
  p.menu.forEach((e, i) => lines.push(`  ${i === 0 ? '*' : ' '} ${e.id.padEnd(7)} ${e.cmdline}`));
  return `${lines.join('\n')}\n`;
}

/** Step 6: the question, or why there is none. */
async function ask(prepared: Prepared, o: CreateUsbDriveOptions, ctx: CreateUsbDriveContext): Promise<boolean> {
  const { target } = prepared;
  if (o.yes) return true;
  let question: string;
  if (target.kind === 'disk') {
    const warn = looksRemovable(prepared.disk!) ? '' : ' It does not look like a USB stick or other removable disk.';
    question = `Everything on ${target.path} will be lost.${warn} Write the stick?`;
  } else if (target.existingBytes !== undefined) {
    question = `${target.path} exists (${formatBytes(target.existingBytes)}). Replace it?`;
  } else {
    return true;
  }
  const answer = await ctx.confirm(question);
  if (answer === null) throw new UsageError(`no terminal to ask on: pass --yes to write ${target.path}, or --dry-run to only look`, { command: 'create-usbdrive' });
  return answer;
}

export async function createUsbDrive(o: CreateUsbDriveOptions, ctx: CreateUsbDriveContext): Promise<CreateUsbDriveResult> {
  const started = Date.now();
  const { target, disk } = await lookAtTarget(o, ctx);
  const cfg = await o.loadConfig();
  const boot = await findBootFiles(o.searchDirs);
  const tools = await findEspTools(o.searchDirs, boot.syslinux);
  // Private: the ESP and a stiefelOS built here carry the secret.
  const work = await mkdtemp(posix.join(o.tmpDir ?? tmpdir(), 'stf13-'));
  try {
    const os = await getStiefelOs(o, cfg, ctx, work);
    const menu = stickMenu({ cmdlineAppend: cfg.config.client.cmdlineAppend });
    const contents = espContents(boot, os, menu);
    let layout: StickLayout;
    try {
      layout = planStick({ files: await espFileSizes(contents), requestedBytes: o.sizeBytes, deviceBytes: target.kind === 'disk' ? target.bytes : undefined });
    } catch (err) {
      if (err instanceof StickSizeError) throw new UsageError(err.message, { command: 'create-usbdrive' });
      throw err;
    }
    const prepared: Prepared = { target, disk, boot, os, menu, layout };
    ctx.out(formatLayout(prepared));
    if (target.kind === 'disk') {
      // What is about to be erased, also with --yes and on a dry run.
      const contents = await readDiskContents(target.device, target.bytes).catch(() => undefined);
      ctx.out(`now on the disk:\n${describeDisk(disk!, contents)}\n`);
    }
    if (o.dryRun) {
      ctx.log.info(`dry run: nothing was written; ${SECRET_NOTE.replace('the stick holds', 'the stick would hold')}`);
      return { target, layout, written: false, seconds: (Date.now() - started) / 1000 };
    }
    if (!(await ask(prepared, o, ctx))) {
      ctx.log.info('nothing was written');
      return { target, layout, written: false, seconds: (Date.now() - started) / 1000 };
    }

    const espPath = posix.join(work, 'esp.img');
    const volume = randomBytes(4).readUInt32LE(0);
    ctx.log.info(`building the ESP (${formatMiB(layout.esp.bytes)}, FAT32) with mkfs.vfat, mtools and the syslinux installer`);
    await buildEsp({ path: espPath, layout, volumeId: volume, label: ESP_LABEL, copies: contents.copies, texts: contents.texts, tools, workDir: work }, { runner: ctx.runner, log: ctx.log.child('usbdrive'), signal: ctx.signal });
    const gpt = encodeGpt({
      diskSectors: layout.diskSectors,
      diskGuid: guidFromRandom(randomBytes(16)),
      bootCode: await readFile(boot.gptmbr),
      partitions: [
        {
          typeGuid: GPT_TYPE_ESP,
          uniqueGuid: guidFromRandom(randomBytes(16)),
          firstLba: layout.esp.firstLba,
          lastLba: layout.esp.lastLba,
          attributes: [GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE],
          name: 'stiefelsystem',
        },
      ],
    });
    const stick = { layout, gpt, espPath };
    const io = { signal: ctx.signal, progress: ctx.writeProgress };
    let result;
    if (target.kind === 'image') {
      result = await writeImageFile(target.path, stick, io);
    } else {
      const device = target.device;
      result = await writeDisk(device, stick, {
        ...io,
        dropCache: async () => {
          const r = await ctx.runner.run('blockdev', ['--flushbufs', device]);
          if (r.code !== 0) ctx.log.warn(`blockdev --flushbufs ${device} failed (${r.stderr.trim()}): the read-back check may have read the page cache`);
        },
        rereadPartitions: async () => {
          const r = await ctx.runner.run('blockdev', ['--rereadpt', device]);
          if (r.code !== 0) ctx.log.debug(`blockdev --rereadpt ${device}: ${r.stderr.trim()}`);
        },
      });
    }
    ctx.log.info(`wrote and checked ${formatMiB(result.bytesWritten)} on ${target.path} in ${result.seconds.toFixed(1)} s: it boots UEFI and BIOS PCs`);
    ctx.log.info(`note: ${SECRET_NOTE}`);
    return { target, layout, written: true, seconds: (Date.now() - started) / 1000 };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
