// The library entry point: find what the laptop boots on a directory, a
// partition, a whole disk or a disk image, and give access to the chosen
// kernel and initrd bytes for exactly as long as the caller needs them.
//
//   const scan = await findBootEntries('/dev/nvme0n1', { log, signal, passphrase });
//   try {
//     const entry = scan.default;                 // or pick from scan.entries
//     const kernel = scan.open(entry.files.kernel);         // a Readable
//     for (const f of entry.files.initrds) scan.open(f);    // in order
//   } finally {
//     await scan.close();   // unmounts, detaches loops, closes LUKS, deactivates LVM
//   }
//
// `withBootEntries(source, options, fn)` does the try/finally for you.
// Partitions are mounted read-only (noload/norecovery) through read-only loop
// devices in private `stf4-` directories; nothing is ever written to the disk.
// Unencrypted file systems are searched first; LVM volume groups are
// activated only if they found nothing, and LUKS containers are opened (asking
// for the passphrase) only if still nothing usable was found.
import { createReadStream, type ReadStream } from 'node:fs';
import { open, readFile, realpath, stat } from 'node:fs/promises';
import { StiefelError } from '../errors';
import { silentLogger, type Logger } from '../log';
import { CleanupStack } from '../disk/cleanup';
import { activateVolumeGroup } from '../disk/lvm';
import { openLuks } from '../disk/luks';
import { attachLoop, mountArgs, mountReadOnly, TEMP_PREFIX } from '../disk/mount';
import { noPassphrase, type PassphraseProvider } from '../disk/passphrase';
import { GPT_TYPE_BIOS_BOOT, GPT_TYPE_ESP, readPartitionTable, type PartitionTable } from '../disk/partition-table';
import { PROBE_BYTES, probeFilesystem, type FsProbe } from '../disk/fs-probe';
import { systemRunner, type CommandRunner } from '../disk/runner';
import { deviceSize, readRange } from '../disk/read-range';
import { discoverBootEntries, readResolvedFile, type BootEntry, type BootTree, type Discovery, type ResolvedFile } from './discover';

export interface FindBootEntriesOptions {
  log?: Logger;
  signal?: AbortSignal;
  /** Asked when a LUKS container has to be opened; without one, LUKS is reported, not opened. */
  passphrase?: PassphraseProvider;
  /** Command line for kernel pairs (the layouts that carry none), from the config. */
  cmdline?: string | null;
  /** 'efi' or 'pc' when known (stiefelOS knows from /sys/firmware/efi). */
  platform?: 'efi' | 'pc';
  /** Programs are run through this (tests script it). */
  runner?: CommandRunner;
  /** Where private mount points go (default: the OS temp dir). */
  tmpRoot?: string;
}

/** One line per partition or volume looked at. */
export interface VolumeReport {
  name: string;
  what: string;
  /** Why it was not searched, when it was not. */
  problem: string | null;
}

export interface BootEntryScan extends Discovery {
  source: string;
  volumes: VolumeReport[];
  /** Every file system looked in, mounted until close(). */
  trees: readonly BootTree[];
  /** The entry the laptop boots by default, or null when none is usable. */
  default: BootEntry | null;
  /** Streams a file's bytes (a whole file or a UKI section); valid until close(). */
  open(file: ResolvedFile): ReadStream;
  /** Reads a file's bytes into memory (small files, tests). */
  read(file: ResolvedFile): Promise<Buffer>;
  /** Unmounts, detaches, closes and deactivates everything, last first. Idempotent. */
  close(): Promise<void>;
}

interface Volume {
  name: string;
  /** Device or file holding it, and the byte range. */
  device: string;
  offset: number;
  size: number;
  probe: FsProbe;
  number?: number;
  isEsp?: boolean;
  gptType?: string;
}

/** For a directory: its path inside the file system it is on (e.g. "/boot"), from mountinfo. */
async function subdirOf(dir: string): Promise<string | undefined> {
  let info: string;
  try {
    info = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  let best = '';
  for (const line of info.split('\n')) {
    const mp = line.split(' ')[4]?.replace(/\\040/g, ' ');
    if (mp && (dir === mp || dir.startsWith(mp === '/' ? '/' : `${mp}/`)) && mp.length > best.length) best = mp;
  }
  if (!best || best === dir) return undefined;
  return best === '/' ? dir : dir.slice(best.length);
}

function partitionName(source: string, n: number, isBlock: boolean): string {
  if (!isBlock) return `${source}#${n}`;
  return /\d$/.test(source) ? `${source}p${n}` : `${source}${n}`;
}

export async function findBootEntries(source: string, options: FindBootEntriesOptions = {}): Promise<BootEntryScan> {
  const log = options.log ?? silentLogger;
  const runner = options.runner ?? systemRunner;
  const cleanup = new CleanupStack(log);
  const signal = options.signal;
  const volumes: VolumeReport[] = [];
  const checkAbort = (): void => {
    if (signal?.aborted) throw new StiefelError('E_INTERRUPTED', 'interrupted; everything mounted was unmounted again');
  };
  let scanned: readonly BootTree[] = [];
  const scanOf = (d: Discovery): BootEntryScan => ({
    ...d,
    source,
    volumes,
    trees: scanned,
    default: d.entries.find((e) => e.default) ?? null,
    open: (f) => createReadStream(f.hostPath, { start: f.offset, end: f.offset + f.length - 1 }),
    read: (f) => readResolvedFile(f),
    close: async () => {
      const failed = await cleanup.run();
      if (failed.length) throw new StiefelError('E_CLEANUP', `could not undo: ${failed.join('; ')}`);
    },
  });
  const discoverOpts = {
    log,
    ...(signal ? { signal } : {}),
    ...(options.cmdline !== undefined ? { cmdline: options.cmdline } : {}),
    ...(options.platform ? { platform: options.platform } : {}),
  };

  let st;
  try {
    st = await stat(source);
  } catch (err) {
    throw new StiefelError('E_NO_SOURCE', `${source} does not exist: give a mounted /boot or ESP directory, a partition, a disk or a disk image`, { cause: err });
  }
  if (st.isDirectory()) {
    const dir = await realpath(source);
    const subdir = await subdirOf(dir);
    const tree: BootTree = { dir, partition: source, ...(subdir ? { subdir } : {}) };
    volumes.push({ name: source, what: 'directory', problem: null });
    scanned = [tree];
    return scanOf(await discoverBootEntries([tree], discoverOpts));
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new StiefelError('E_NO_SOURCE', `${source} is neither a directory, a disk image nor a block device`);
  const isBlock = st.isBlockDevice();

  try {
    const size = await deviceSize(source);
    const mountOpts = { runner, cleanup, ...(options.tmpRoot ? { tmpRoot: options.tmpRoot } : {}) };
    const plain: Volume[] = [];
    const lvmPvs: Volume[] = [];
    const luks: Volume[] = [];
    const classify = (v: Volume): void => {
      const k = v.probe.kind;
      if (mountArgs(k)) plain.push(v);
      else if (k === 'lvm2') lvmPvs.push(v);
      else if (k === 'luks') luks.push(v);
      else volumes.push({ name: v.name, what: k === 'unknown' ? `unknown contents${v.gptType ? ` (type ${v.gptType})` : ''}` : k, problem: k === 'swap' ? 'swap' : 'no file system we can read' });
    };

    const whole = probeFilesystem(await readRange(source, 0, PROBE_BYTES));
    let table: PartitionTable | null = null;
    if (whole.kind !== 'unknown') {
      classify({ name: source, device: source, offset: 0, size, probe: whole });
    } else {
      table = await readPartitionTable((o, l) => readRange(source, o, l), size);
      if (!table) throw new StiefelError('E_NO_PARTITIONS', `${source} has neither a partition table (GPT or MBR) nor a file system we know`);
      for (const p of table.problems) log.warn(`${source}: ${p}`);
      for (const p of table.partitions) {
        checkAbort();
        const name = partitionName(source, p.number, isBlock);
        if (p.type === GPT_TYPE_BIOS_BOOT) {
          volumes.push({ name, what: 'BIOS boot partition', problem: 'holds no files' });
          continue;
        }
        const probe = probeFilesystem(await readRange(source, p.offset, Math.min(PROBE_BYTES, p.size)));
        classify({ name, device: source, offset: p.offset, size: p.size, probe, number: p.number, isEsp: p.type === GPT_TYPE_ESP, gptType: p.type });
      }
    }

    const trees: BootTree[] = [];
    let counter = 0;
    const mountVolume = async (v: Volume, device: string, offset: number, size: number): Promise<void> => {
      checkAbort();
      try {
        const dev = offset === 0 && size === 0 ? device : await attachLoop(device, offset, size, mountOpts);
        const dir = await mountReadOnly(dev, v.probe.kind, mountOpts);
        log.debug(`mounted ${v.name} at ${dir}`);
        trees.push({ dir, partition: v.name, fsUuid: v.probe.uuid, fsLabel: v.probe.label, ...(v.number ? { number: v.number } : {}), ...(v.isEsp ? { isEsp: true } : {}) });
        volumes.push({ name: v.name, what: `${v.probe.kind}${v.probe.uuid ? ` ${v.probe.uuid}` : ''}`, problem: null });
      } catch (err) {
        if (!(err instanceof StiefelError)) throw err;
        const why = v.probe.kind === 'vfat' ? `${err.message} (does this kernel have vfat?)` : err.message;
        volumes.push({ name: v.name, what: v.probe.kind, problem: why });
        log.debug(`${v.name}: ${why}`);
      }
    };
    for (const v of plain) await mountVolume(v, v.device, v.offset, v.size);
    let discovery = await discoverBootEntries(trees, discoverOpts);

    const addLvm = async (pv: Volume, device: string): Promise<void> => {
      checkAbort();
      try {
        const lvs = await activateVolumeGroup(device, { runner, cleanup });
        const inUse = lvs.filter((lv) => lv.wasActive);
        if (inUse.length) log.info(`${pv.name}: volume group ${inUse[0]!.vg} is active on this machine already: ${inUse.map((lv) => lv.path).join(', ')} read as they are and left active`);
        for (const lv of lvs) {
          checkAbort();
          const probe = probeFilesystem(await readRange(lv.path, 0, PROBE_BYTES));
          const v: Volume = { name: lv.path, device: lv.path, offset: 0, size: 0, probe };
          if (mountArgs(probe.kind)) await mountVolume(v, lv.path, 0, 0);
          else volumes.push({ name: lv.path, what: probe.kind, problem: 'no file system we can read' });
        }
      } catch (err) {
        if (!(err instanceof StiefelError) || err.code === 'E_INTERRUPTED') throw err;
        volumes.push({ name: pv.name, what: 'LVM physical volume', problem: err.message });
      }
    };

    if (discovery.entries.length === 0 && lvmPvs.length) {
      for (const pv of lvmPvs) {
        const dev = await attachLoop(pv.device, pv.offset, pv.size, mountOpts);
        await addLvm(pv, dev);
      }
      discovery = await discoverBootEntries(trees, discoverOpts);
    } else for (const pv of lvmPvs) volumes.push({ name: pv.name, what: 'LVM physical volume', problem: 'not activated: usable entries were found without it' });

    // A container the passphrase did not open, when nothing else had an
    // entry: that is the one thing to tell the user.
    let passphraseFailure: StiefelError | null = null;
    if (discovery.entries.length === 0 && luks.length) {
      for (const c of luks) {
        checkAbort();
        const dev = await attachLoop(c.device, c.offset, c.size, mountOpts);
        let mapped: string;
        try {
          mapped = await openLuks(dev, {
            runner,
            cleanup,
            passphrase: options.passphrase ?? noPassphrase,
            ...(signal ? { signal } : {}),
            name: `${TEMP_PREFIX}luks-${process.pid}-${++counter}`,
            label: c.name,
          });
        } catch (err) {
          if (!(err instanceof StiefelError) || err.code === 'E_INTERRUPTED') throw err;
          if (err.code === 'E_LUKS_PASSPHRASE') passphraseFailure ??= err;
          volumes.push({ name: c.name, what: 'LUKS', problem: err.message });
          continue;
        }
        const probe = probeFilesystem(await readRange(mapped, 0, PROBE_BYTES));
        // Named after its partition: the mapping is gone once the scan is closed.
        const inner: Volume = { name: c.name, device: mapped, offset: 0, size: 0, probe, ...(c.number ? { number: c.number } : {}) };
        log.debug(`${c.name}: LUKS opened as ${mapped}, holding ${probe.kind}`);
        if (probe.kind === 'lvm2') await addLvm(inner, mapped);
        else if (mountArgs(probe.kind)) await mountVolume(inner, mapped, 0, 0);
        else volumes.push({ name: inner.name, what: `LUKS holding ${probe.kind}`, problem: 'no file system we can read' });
      }
      discovery = await discoverBootEntries(trees, discoverOpts);
      if (discovery.entries.length === 0 && passphraseFailure) throw passphraseFailure;
    } else for (const c of luks) volumes.push({ name: c.name, what: 'LUKS', problem: 'not opened: usable entries were found without it' });

    checkAbort();
    scanned = trees;
    return scanOf(discovery);
  } catch (err) {
    await cleanup.run();
    throw err;
  }
}

/** Runs `fn` with the scan and always closes it, also when `fn` throws. */
export async function withBootEntries<T>(source: string, options: FindBootEntriesOptions, fn: (scan: BootEntryScan) => Promise<T>): Promise<T> {
  const scan = await findBootEntries(source, options);
  try {
    return await fn(scan);
  } finally {
    await scan.close();
  }
}

export type { BootEntry, ResolvedFile, BootTree };
