// Read-only access to one partition of a disk, image or block device:
// a read-only loop device over its byte range (losetup --offset
// --sizelimit, since loop devices here do not scan partitions), mounted
// read-only with journal replay disabled (`noload` for ext*, `norecovery` for
// XFS, `rescue=nologreplay` for Btrfs) in a private temporary directory.
// Every step registers its undo on the CleanupStack first thing.
import { mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../errors';
import type { CleanupStack } from './cleanup';
import { runChecked, type CommandRunner } from './runner';
import type { FsKind } from './fs-probe';

export const TEMP_PREFIX = 'stf4-';

const firstLine = (text: string): string => text.trim().split('\n')[0]!.trim();

export interface MountOptions {
  runner: CommandRunner;
  cleanup: CleanupStack;
  /** Directory for private mount points (default: the OS temp dir). */
  tmpRoot?: string;
}

/** mount(8) type and options for a read-only, journal-less mount; null when we do not mount it. */
export function mountArgs(kind: FsKind): { type: string; options: string } | null {
  switch (kind) {
    case 'ext':
      return { type: 'ext4', options: 'ro,noload' };
    case 'xfs':
      return { type: 'xfs', options: 'ro,norecovery' };
    case 'btrfs':
      return { type: 'btrfs', options: 'ro,rescue=nologreplay' };
    case 'vfat':
      return { type: 'vfat', options: 'ro' };
    default:
      return null;
  }
}

/** Attaches a read-only loop device over [offset, offset+size) of `file`. */
export async function attachLoop(file: string, offset: number, size: number, o: MountOptions): Promise<string> {
  const args = ['--find', '--show', '--read-only', '--offset', String(offset), '--sizelimit', String(size), file];
  const r = await o.runner.run('losetup', args);
  const dev = r.stdout.trim();
  // Register the undo before judging the result: a device that exists must go.
  if (dev.startsWith('/dev/')) o.cleanup.push(`loop device ${dev}`, async () => void (await runChecked(o.runner, 'E_LOOP_DETACH', 'losetup', ['--detach', dev])));
  if (r.code !== 0 || !dev.startsWith('/dev/')) {
    throw new StiefelError('E_LOOP', `losetup ${args.join(' ')} failed: ${firstLine(r.stderr) || `exit code ${r.code}`}`);
  }
  return dev;
}

/** Mounts `device` read-only at a new private directory; returns the directory. */
export async function mountReadOnly(device: string, kind: FsKind, o: MountOptions): Promise<string> {
  const m = mountArgs(kind);
  if (!m) throw new StiefelError('E_MOUNT', `cannot mount a ${kind} file system`);
  const dir = await mkdtemp(join(o.tmpRoot ?? tmpdir(), TEMP_PREFIX));
  o.cleanup.push(`mount point ${dir}`, () => rmdir(dir));
  const args = ['-t', m.type, '-o', m.options, device, dir];
  const r = await o.runner.run('mount', args);
  if (r.code !== 0) {
    throw new StiefelError('E_MOUNT', `mount ${args.join(' ')} failed: ${firstLine(r.stderr) || `exit code ${r.code}`}`);
  }
  o.cleanup.push(`mount ${dir}`, async () => void (await runChecked(o.runner, 'E_UMOUNT', 'umount', [dir])));
  return dir;
}
