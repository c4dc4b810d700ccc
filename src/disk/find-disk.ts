// Naming the laptop's disk so that it is found again whatever order the
// kernel probes disks in (a USB stick plugged in shifts sda/sdb): PTUUID=ID,
// the id of its partition table, is looked up among the machine's disks.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { readRange } from './read-range';
import { readDiskId } from './partition-table';

/** Block devices that are never the laptop's disk. */
const NOT_A_DISK = /^(loop|ram|zram|dm-|md|sr|nbd|fd)/;

export interface FindDiskOptions {
  sysBlock?: string;
  dev?: string;
  /** How long to wait for the disk to appear (storage drivers still probing); ms. */
  waitMs?: number;
  log: Logger;
  signal?: AbortSignal;
}

/** The device path of `spec`: itself, or for PTUUID=ID the disk whose partition table has that id. */
export async function resolveDisk(spec: string, options: FindDiskOptions): Promise<string> {
  const m = /^PTUUID=(.+)$/.exec(spec);
  if (!m) return spec;
  const want = m[1]!.toLowerCase();
  const sys = options.sysBlock ?? '/sys/block';
  const dev = options.dev ?? '/dev';
  const deadline = Date.now() + (options.waitMs ?? 30_000);
  let said = false;
  for (;;) {
    const seen: string[] = [];
    for (const name of (await readdir(sys).catch(() => [] as string[])).sort()) {
      if (NOT_A_DISK.test(name)) continue;
      const path = join(dev, name);
      const id = await readDiskId((o, l) => readRange(path, o, l)).catch(() => null);
      seen.push(`${name} ${id ?? '(no partition table)'}`);
      if (id?.toLowerCase() === want) {
        options.log.info(`the laptop's disk ${spec} is ${path}`);
        return path;
      }
    }
    if (Date.now() >= deadline || options.signal?.aborted) {
      throw new StiefelError('E_DISK_NOT_FOUND', `no disk here has partition table ${want} (server.disk ${spec}); found: ${seen.join(', ') || 'no disks'}`);
    }
    if (!said) options.log.info(`waiting for the disk with partition table ${want} to appear`);
    said = true;
    await new Promise((r) => setTimeout(r, 500));
  }
}
