// The boot payload found on the laptop's own disk, the way its boot loader
// would find it (boot-entry discovery, src/boot-entries): the default entry's kernel
// and initrds, copied into memory-backed files, after which every partition
// is unmounted, LUKS mapping closed and LVM volume deactivated again, so that
// the disk is served untouched. A LUKS passphrase is asked through the
// payload channel, i.e. on the desktop.
//
// The laptop OS's initramfs family and command line come from the record
// `stiefelctl setup-server-os` writes into its boot partition
// (stiefelsystem-os.json), else from the config.
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { findBootEntries, type BootEntry, type BootEntryScan, type BootTree } from '../boot-entries/find';
import type { InitramfsFamily } from '../config/schema';
import { INITRAMFS_FAMILIES } from '../config/schema';
import type { CommandRunner } from '../disk/runner';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { BOOT_RECORD_FILE } from '../server-os/plan';
import { FilesPayloadSource, type BootPayload, type BootPayloadContext, type BootPayloadSource } from './payload-source';
import { initrdPadding } from '../cpio/newc';

export interface BootEntriesSourceOptions {
  /** The laptop's disk (or a partition, or an image). */
  device: string;
  /** Where the kernel and initrd are copied (a tmpfs in stiefelOS). */
  workDir: string;
  /** Family when the disk has no record (config server.family). */
  family?: InitramfsFamily;
  /** Command line for entries without one when the disk has no record (config server.cmdline). */
  cmdline?: string;
  runner?: CommandRunner;
}

export interface BootRecordRead {
  family?: InitramfsFamily;
  cmdline?: string;
}

/** The record's fields that are usable; anything malformed is ignored with a warning. */
export function parseBootRecord(text: string, log: Logger, where: string): BootRecordRead {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    log.warn(`${where} is not valid JSON; ignored (run stiefelctl setup-server-os again on the laptop OS)`);
    return {};
  }
  if (typeof doc !== 'object' || doc === null) return {};
  const o = doc as Record<string, unknown>;
  const out: BootRecordRead = {};
  if (typeof o.family === 'string' && (INITRAMFS_FAMILIES as readonly string[]).includes(o.family)) out.family = o.family as InitramfsFamily;
  if (typeof o.cmdline === 'string' && o.cmdline.trim() && !/[\x00-\x1f"'\\]/.test(o.cmdline)) out.cmdline = o.cmdline.trim();
  return out;
}

/**
 * setup-server-os's record: in the partition of the entry's kernel first,
 * then in the others (systemd-boot's kernels live on the ESP, the record in
 * the root file system's /boot).
 */
async function readRecord(entry: BootEntry, trees: readonly BootTree[], log: Logger): Promise<BootRecordRead> {
  const first = entry.files.kernel.tree;
  for (const tree of [first, ...trees.filter((t) => t !== first)]) {
    for (const rel of [BOOT_RECORD_FILE, `boot/${BOOT_RECORD_FILE}`]) {
      try {
        const text = await readFile(join(tree.dir, rel), 'utf8');
        return parseBootRecord(text, log, `${tree.partition}:/${rel}`);
      } catch {
        // not there
      }
    }
  }
  return {};
}

interface Prepared {
  files: FilesPayloadSource;
  describe: string;
}

export class BootEntriesPayloadSource implements BootPayloadSource {
  readonly #o: BootEntriesSourceOptions;
  #prepared: Prepared | undefined;
  #running: Promise<Prepared> | undefined;

  constructor(options: BootEntriesSourceOptions) {
    this.#o = options;
  }

  /**
   * Scans the disk, copies the default entry's kernel and initrds, and closes
   * everything again. One scan at a time; a successful one is kept.
   */
  prepare(ctx: Partial<BootPayloadContext> & { log: Logger; signal: AbortSignal }): Promise<Prepared> {
    if (this.#prepared) return Promise.resolve(this.#prepared);
    if (!this.#running) {
      this.#running = this.#scan(ctx).finally(() => (this.#running = undefined));
    }
    return this.#running;
  }

  async #scan(ctx: Partial<BootPayloadContext> & { log: Logger; signal: AbortSignal }): Promise<Prepared> {
    const { log, signal } = ctx;
    const o = this.#o;
    let scan: BootEntryScan | undefined;
    const dir = join(o.workDir, 'payload');
    try {
      await mkdir(o.workDir, { recursive: true, mode: 0o700 });
      scan = await findBootEntries(o.device, {
        log: log.child('boot-entries'),
        signal,
        passphrase: ctx.passphrase,
        cmdline: null,
        runner: o.runner,
        tmpRoot: o.workDir,
      });
      const entry = scan.default;
      if (!entry) {
        const why = scan.layouts.map((l) => `${l.source}: ${l.summary}`).join('; ');
        const problems = scan.volumes.filter((v) => v.problem).map((v) => `${v.name}: ${v.problem}`);
        throw new StiefelError(
          'E_NO_BOOT_ENTRY',
          `no usable boot entry on ${o.device} (${[why, ...problems].filter(Boolean).join('; ') || 'no file system to look in'}); name the files in server.boot instead`,
        );
      }
      const record = await readRecord(entry, scan.trees, log);
      const family = record.family ?? o.family;
      if (!family) {
        throw new StiefelError(
          'E_NO_FAMILY',
          `cannot tell the initramfs family of the laptop OS on ${o.device}: run 'stiefelctl setup-server-os' on it, or set server.family in the config`,
        );
      }
      // The boot loader's own command line wins; kernel pairs have none.
      const cmdline = entry.cmdline ?? record.cmdline ?? o.cmdline;
      if (cmdline === undefined) {
        throw new StiefelError(
          'E_NO_CMDLINE',
          `the boot entry '${entry.title}' on ${entry.partition} has no command line: run 'stiefelctl setup-server-os' on the laptop OS, or set server.cmdline in the config`,
        );
      }
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const kernelPath = join(dir, 'vmlinuz');
      const initrdPath = join(dir, 'initrd.img');
      await pipeline(scan.open(entry.files.kernel), createWriteStream(kernelPath, { mode: 0o600 }), { signal });
      // Several initrds (microcode first, say) are one concatenated file, as the kernel takes them.
      const out = createWriteStream(initrdPath, { mode: 0o600 });
      let written = 0;
      for (const f of entry.files.initrds) {
        // Each archive starts 4-byte aligned, as the kernel's unpacker wants (and GRUB pads).
        const pad = initrdPadding(written);
        if (pad.length) out.write(pad);
        await pipeline(scan.open(f), out, { end: false, signal });
        written += pad.length + f.length;
      }
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      const describe = `'${entry.title}' (${entry.source}${entry.version ? ` ${entry.version}` : ''}) from ${entry.partition}`;
      const files = new FilesPayloadSource({ kernel: kernelPath, initrd: initrdPath, cmdline, family });
      await scan.close();
      scan = undefined;
      await files.prepare(signal);
      log.info(`boot payload: ${describe}, ${family}, command line: ${cmdline}`);
      this.#prepared = { files, describe };
      return this.#prepared;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    } finally {
      await scan?.close();
    }
  }

  async resolve(ctx: BootPayloadContext): Promise<BootPayload> {
    const p = await this.prepare(ctx);
    return p.files.resolve(ctx);
  }

  /** Removes the copies. */
  async close(): Promise<void> {
    this.#prepared = undefined;
    await rm(join(this.#o.workDir, 'payload'), { recursive: true, force: true });
  }
}
