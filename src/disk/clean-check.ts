// Before the laptop returns to its own OS after serving its disk, its file
// systems must say they were left cleanly: an ext2/3/4 file system that was
// unmounted (or remounted read-only) clears its needs_recovery flag and
// keeps no error state. And a LUKS container whose key is sealed in the TPM
// will not unseal after a kexec (the measurements differ), so such a laptop
// returns through its firmware instead. Pure decoders and a reader.
import { probeFilesystem, PROBE_BYTES } from './fs-probe';
import { readPartitionTable, type ReadAt } from './partition-table';

/** ext superblock (at 1024): s_state at 0x3a, s_feature_incompat at 0x60. */
const EXT_STATE = 1024 + 0x3a;
const EXT_INCOMPAT = 1024 + 0x60;
const EXT4_ERROR_FS = 0x2;
const EXT4_FEATURE_INCOMPAT_RECOVER = 0x4;

export type ExtState = 'clean' | 'needs-recovery' | 'errors';

/** The state an ext superblock records; undefined when it is not one. */
export function extState(b: Uint8Array): ExtState | undefined {
  if (probeFilesystem(b).kind !== 'ext' || b.length < EXT_INCOMPAT + 4) return undefined;
  const state = b[EXT_STATE]! | (b[EXT_STATE + 1]! << 8);
  const incompat = b[EXT_INCOMPAT]! | (b[EXT_INCOMPAT + 1]! << 8) | (b[EXT_INCOMPAT + 2]! << 16) | (b[EXT_INCOMPAT + 3]! << 24);
  if (state & EXT4_ERROR_FS) return 'errors';
  if (incompat & EXT4_FEATURE_INCOMPAT_RECOVER) return 'needs-recovery';
  return 'clean';
}

/** Whether a LUKS2 header (its JSON area, after the 4 KiB binary header) holds a TPM2 token: systemd-cryptenroll's or clevis'. */
export function luksSealedToTpm(header: Uint8Array): boolean {
  if (header.length < 4096 || Buffer.from(header.subarray(0, 6)).toString('latin1') !== 'LUKS\xba\xbe') return false;
  const version = (header[6]! << 8) | header[7]!;
  if (version !== 2) return false;
  const end = header.indexOf(0, 4096);
  let json: { tokens?: Record<string, { type?: unknown; jwe?: unknown }> };
  try {
    json = JSON.parse(Buffer.from(header.subarray(4096, end < 0 ? header.length : end)).toString('utf8')) as typeof json;
  } catch {
    return false;
  }
  return Object.values(json.tokens ?? {}).some((t) => t.type === 'systemd-tpm2' || (t.type === 'clevis' && JSON.stringify(t).includes('tpm2')));
}

export interface DiskHealth {
  /** Partitions whose file system was not left clean, with what it says. */
  dirty: Array<{ partition: number; state: ExtState }>;
  /** Partitions that are not checked here (XFS, Btrfs, FAT, LUKS, LVM). */
  unchecked: Array<{ partition: number; kind: string }>;
  clean: number[];
  /** A LUKS container's key is sealed in the TPM. */
  tpmSealed: boolean;
}

/** Checks every partition of a disk (or the disk itself when it has no table). */
export async function checkDiskHealth(readAt: ReadAt, size: number): Promise<DiskHealth> {
  const table = await readPartitionTable(readAt, size);
  const parts = table?.partitions.map((p) => ({ number: p.number, offset: p.offset, size: p.size })) ?? [{ number: 0, offset: 0, size }];
  const health: DiskHealth = { dirty: [], unchecked: [], clean: [], tpmSealed: false };
  for (const p of parts) {
    const head = await readAt(p.offset, Math.min(PROBE_BYTES, p.size));
    const kind = probeFilesystem(head).kind;
    if (kind === 'ext') {
      const state = extState(head)!;
      if (state === 'clean') health.clean.push(p.number);
      else health.dirty.push({ partition: p.number, state });
    } else if (kind === 'luks') {
      // The LUKS2 JSON area is at most 4 MiB; 64 KiB holds every token in practice.
      if (luksSealedToTpm(await readAt(p.offset, Math.min(64 * 1024, p.size)))) health.tpmSealed = true;
      health.unchecked.push({ partition: p.number, kind });
    } else if (kind === 'xfs' || kind === 'btrfs' || kind === 'lvm2' || kind === 'vfat') health.unchecked.push({ partition: p.number, kind });
  }
  return health;
}
