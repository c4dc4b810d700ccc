// Puts the stick's bytes onto the target: an image file (a temporary file,
// mode 0600, renamed over the target at the end) or a whole disk (opened
// with O_EXCL, so the kernel refuses while anything has it mounted or holds
// it, and nothing can mount it while we write).
//
// The order on a disk is what makes an interruption harmless: first the old
// signatures at both ends are wiped (no boot code, no partition table: the
// disk boots nowhere), then the ESP and the backup GPT are written, synced,
// read back and compared, and only then the primary GPT and, last of all,
// sector 0 with the protective MBR and its boot code, which is the moment
// the stick becomes bootable. The plan is pure; the executor does the I/O.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import type { EncodedGpt } from './gpt';
import { SECTOR_SIZE } from './gpt';
import { MiB, type StickLayout } from './layout';

export interface StickBytes {
  layout: StickLayout;
  gpt: EncodedGpt;
  /** The ESP image, layout.esp.bytes long. */
  espPath: string;
}

export type WritePhase = 'wiping' | 'writing' | 'verifying' | 'partition table';

export type WriteStep =
  | { kind: 'zero'; phase: WritePhase; offset: number; length: number }
  | { kind: 'file'; phase: WritePhase; offset: number; length: number; path: string; sparse: boolean }
  | { kind: 'bytes'; phase: WritePhase; offset: number; data: Buffer }
  | { kind: 'sync' }
  /** Reads back what the named earlier steps wrote and compares. */
  | { kind: 'verify'; phase: WritePhase; steps: number[] }
  /** From here on the target boots: a failure after this step un-does it. */
  | { kind: 'commit' };

const WIPE_BYTES = MiB;

/** The order for a whole disk (see the file comment). */
export function diskWritePlan(s: StickBytes): WriteStep[] {
  const disk = s.layout.diskBytes;
  const head = Math.min(WIPE_BYTES, disk);
  const tailStart = Math.max(head, disk - WIPE_BYTES);
  const plan: WriteStep[] = [
    { kind: 'zero', phase: 'wiping', offset: 0, length: head },
    { kind: 'zero', phase: 'wiping', offset: tailStart, length: disk - tailStart },
    { kind: 'sync' },
    { kind: 'file', phase: 'writing', offset: s.layout.esp.offset, length: s.layout.esp.bytes, path: s.espPath, sparse: false },
    { kind: 'bytes', phase: 'writing', offset: s.gpt.backupLba * SECTOR_SIZE, data: s.gpt.backup },
    { kind: 'sync' },
    { kind: 'verify', phase: 'verifying', steps: [3, 4] },
    { kind: 'bytes', phase: 'partition table', offset: SECTOR_SIZE, data: s.gpt.primary.subarray(SECTOR_SIZE) },
    { kind: 'sync' },
    { kind: 'commit' },
    { kind: 'bytes', phase: 'partition table', offset: 0, data: s.gpt.primary.subarray(0, SECTOR_SIZE) },
    { kind: 'sync' },
    { kind: 'verify', phase: 'partition table', steps: [7, 10] },
  ];
  return plan;
}

/** A fresh, sparse temporary file: nothing to wipe, zero runs left as holes. */
export function imageWritePlan(s: StickBytes): WriteStep[] {
  return [
    { kind: 'bytes', phase: 'writing', offset: 0, data: s.gpt.primary },
    { kind: 'file', phase: 'writing', offset: s.layout.esp.offset, length: s.layout.esp.bytes, path: s.espPath, sparse: true },
    { kind: 'bytes', phase: 'writing', offset: s.gpt.backupLba * SECTOR_SIZE, data: s.gpt.backup },
    { kind: 'sync' },
    { kind: 'verify', phase: 'verifying', steps: [0, 1, 2] },
  ];
}

function stepBytes(st: WriteStep): number {
  if (st.kind === 'zero' || st.kind === 'file') return st.length;
  if (st.kind === 'bytes') return st.data.length;
  return 0;
}

/** Bytes per phase, for progress totals. */
export function phaseTotals(plan: readonly WriteStep[]): Map<WritePhase, number> {
  const totals = new Map<WritePhase, number>();
  for (const st of plan) {
    if (st.kind === 'sync' || st.kind === 'commit') continue;
    const n = st.kind === 'verify' ? st.steps.reduce((s, i) => s + stepBytes(plan[i]!), 0) : stepBytes(st);
    totals.set(st.phase, (totals.get(st.phase) ?? 0) + n);
  }
  return totals;
}

export interface WriteProgress {
  phase: WritePhase;
  done: number;
  total: number;
}

export interface ExecuteContext {
  signal?: AbortSignal;
  progress?: (p: WriteProgress) => void;
  /** Makes the next reads come from the medium, not the page cache (blockdev --flushbufs). */
  dropCache?: () => Promise<void>;
}

const CHUNK = 4 * MiB;

function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted ?? false;
}

/** The signal fired between two chunks; the callers say what state that left. */
class Interrupted extends StiefelError {
  constructor() {
    super('E_ABORTED', 'interrupted');
  }
}

export interface PlanState {
  /** The step under way (or failed). */
  step: number;
  /** Bytes written so far. */
  written: number;
}

/** Runs the plan on an open file or device; `state.step` tells how far it got. */
export async function executePlan(fh: FileHandle, plan: readonly WriteStep[], ctx: ExecuteContext, state: PlanState = { step: 0, written: 0 }): Promise<void> {
  const totals = phaseTotals(plan);
  const done = new Map<WritePhase, number>();
  const advance = (phase: WritePhase, n: number): void => {
    done.set(phase, (done.get(phase) ?? 0) + n);
    ctx.progress?.({ phase, done: done.get(phase)!, total: totals.get(phase) ?? 0 });
  };
  const buf = Buffer.alloc(CHUNK);
  const back = Buffer.alloc(CHUNK);
  const writeAll = async (data: Buffer, offset: number): Promise<void> => {
    let at = 0;
    while (at < data.length) {
      const { bytesWritten } = await fh.write(data, at, data.length - at, offset + at);
      state.written += Math.max(0, bytesWritten);
      if (bytesWritten <= 0) throw new StiefelError('E_USB_WRITE', `the target took no bytes at offset ${offset + at}`);
      at += bytesWritten;
    }
  };
  const readFully = async (h: FileHandle, into: Buffer, length: number, offset: number): Promise<void> => {
    let at = 0;
    while (at < length) {
      const { bytesRead } = await h.read(into, at, length - at, offset + at);
      if (bytesRead <= 0) throw new StiefelError('E_USB_READ', `the target ended at offset ${offset + at}, before the end of what was written`);
      at += bytesRead;
    }
  };
  const mismatch = (offset: number): StiefelError =>
    new StiefelError('E_USB_VERIFY', `what was read back from the target at offset ${offset} differs from what was written: the medium may be failing or fake-sized`);

  for (const [index, st] of plan.entries()) {
    state.step = index;
    if (aborted(ctx.signal)) throw new Interrupted();
    switch (st.kind) {
      case 'sync':
        await fh.sync();
        break;
      case 'commit':
        break;
      case 'zero': {
        buf.fill(0);
        for (let at = 0; at < st.length; at += CHUNK) {
          if (aborted(ctx.signal)) throw new Interrupted();
          const n = Math.min(CHUNK, st.length - at);
          await writeAll(buf.subarray(0, n), st.offset + at);
          advance(st.phase, n);
        }
        break;
      }
      case 'bytes':
        await writeAll(st.data, st.offset);
        advance(st.phase, st.data.length);
        break;
      case 'file': {
        const src = await open(st.path, 'r');
        try {
          for (let at = 0; at < st.length; at += CHUNK) {
            if (aborted(ctx.signal)) throw new Interrupted();
            const n = Math.min(CHUNK, st.length - at);
            await readFully(src, buf, n, at);
            const chunk = buf.subarray(0, n);
            if (!(st.sparse && isZero(chunk))) await writeAll(chunk, st.offset + at);
            advance(st.phase, n);
          }
        } finally {
          await src.close();
        }
        break;
      }
      case 'verify': {
        await ctx.dropCache?.();
        for (const i of st.steps) {
          const w = plan[i]!;
          if (w.kind === 'bytes') {
            const got = Buffer.alloc(w.data.length);
            await readFully(fh, got, w.data.length, w.offset);
            if (!got.equals(w.data)) throw mismatch(w.offset);
            advance(st.phase, w.data.length);
          } else if (w.kind === 'file') {
            const src = await open(w.path, 'r');
            try {
              for (let at = 0; at < w.length; at += CHUNK) {
                if (aborted(ctx.signal)) throw new Interrupted();
                const n = Math.min(CHUNK, w.length - at);
                await readFully(src, buf, n, at);
                await readFully(fh, back, n, w.offset + at);
                if (!back.subarray(0, n).equals(buf.subarray(0, n))) throw mismatch(w.offset + at);
                advance(st.phase, n);
              }
            } finally {
              await src.close();
            }
          }
        }
        break;
      }
    }
  }
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

export interface WriteResult {
  bytesWritten: number;
  seconds: number;
}

/** Writes the image file: temporary file (0600) in the target's directory, synced, read back, renamed. */
export async function writeImageFile(target: string, stick: StickBytes, ctx: ExecuteContext): Promise<WriteResult> {
  const started = Date.now();
  const tmp = posix.join(posix.dirname(target), `.${posix.basename(target)}.tmp-${randomBytes(4).toString('hex')}`);
  let fh: FileHandle;
  try {
    fh = await open(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    throw new StiefelError('E_USB_WRITE', `cannot create an image file in ${posix.dirname(target)}: ${errnoCode(err) ?? (err as Error).message} (choose another place, or run as root)`, { cause: err });
  }
  let renamed = false;
  try {
    await fh.chmod(0o600);
    await fh.truncate(stick.layout.diskBytes);
    await executePlan(fh, imageWritePlan(stick), ctx);
    await fh.close();
    await rename(tmp, target);
    renamed = true;
    const dir = await open(posix.dirname(target), 'r');
    await dir.sync().catch(() => undefined);
    await dir.close();
  } catch (err) {
    if (err instanceof Interrupted) throw new StiefelError('E_ABORTED', `interrupted: ${target} was not written`);
    if (errnoCode(err) === 'ENOSPC') throw new StiefelError('E_USB_WRITE', `no space left for the image in ${posix.dirname(target)}: it needs ${stick.layout.diskBytes} bytes`, { cause: err });
    if (err instanceof StiefelError) throw new StiefelError(err.code, `${err.message}; ${target} was not written`, { cause: err });
    throw err;
  } finally {
    await fh.close().catch(() => undefined);
    if (!renamed) await unlink(tmp).catch(() => undefined);
  }
  return { bytesWritten: stick.layout.diskBytes, seconds: (Date.now() - started) / 1000 };
}

export interface DiskWriteContext extends ExecuteContext {
  /** Re-reads the partition table (blockdev --rereadpt) once the device is closed. */
  rereadPartitions?: () => Promise<void>;
}

/** Opens the whole disk exclusively, or says why it cannot. */
export async function openDiskExclusive(device: string): Promise<FileHandle> {
  try {
    return await open(device, constants.O_RDWR | constants.O_EXCL);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'EBUSY') {
      throw new StiefelError('E_USB_BUSY', `${device} is in use (a mounted file system, swap, LVM, LUKS or RAID holds it): unmount or release it first, then run again`, { cause: err });
    }
    if (code === 'EACCES' || code === 'EPERM') throw new StiefelError('E_USB_ACCESS', `cannot open ${device} for writing: run as root`, { cause: err });
    if (code === 'EROFS') throw new StiefelError('E_USB_ACCESS', `${device} is read-only (a write-protect switch?): unlock it and run again`, { cause: err });
    throw new StiefelError('E_USB_ACCESS', `cannot open ${device}: ${(err as Error).message}`, { cause: err });
  }
}

/** Writes the disk in the plan's order; a failure or interruption leaves a disk that does not look bootable, and says so. */
export async function writeDisk(device: string, stick: StickBytes, ctx: DiskWriteContext): Promise<WriteResult> {
  const started = Date.now();
  const fh = await openDiskExclusive(device);
  const plan = diskWritePlan(stick);
  const commitAt = plan.findIndex((s) => s.kind === 'commit');
  const state: PlanState = { step: 0, written: 0 };
  try {
    await executePlan(fh, plan, ctx, state);
  } catch (err) {
    let undone = '';
    if (state.step > commitAt) {
      // The MBR may be on the disk already: take it away again.
      try {
        await fh.write(Buffer.alloc(SECTOR_SIZE), 0, SECTOR_SIZE, 0);
        await fh.sync();
      } catch {
        undone = ' (and wiping its first sector again failed: do not boot from it)';
      }
    }
    await fh.close().catch(() => undefined);
    const outcome =
      state.written === 0 ? `nothing on ${device} was changed` : `${device} holds no partition table now, so it boots nowhere${undone}; run the command again`;
    if (err instanceof Interrupted) throw new StiefelError('E_ABORTED', `interrupted: ${outcome}`);
    const why = err instanceof Error ? err.message : String(err);
    throw new StiefelError(err instanceof StiefelError ? err.code : 'E_USB_WRITE', `writing ${device} failed: ${why}; ${outcome}`, { cause: err });
  }
  await fh.close();
  await ctx.rereadPartitions?.();
  return { bytesWritten: stick.layout.usedBytes, seconds: (Date.now() - started) / 1000 };
}
