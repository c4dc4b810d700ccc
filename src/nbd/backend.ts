// What the NBD server reads and writes through. A backend is a range of
// `size` bytes; the session has already checked every offset and length
// against `size`, the block size limits and `capabilities` before calling.
// Behaviour such as read-only is a wrapper around the next backend
// (backend-read-only.ts), as nbdkit's filters wrap its plugins.
import type { BlockExtent } from './codec';

export type { BlockExtent };

export interface BackendCapabilities {
  /** Writes, trims and zeroing fail with EPERM; NBD_FLAG_READ_ONLY is set. */
  readOnly: boolean;
  /** flush() makes completed writes durable (fdatasync). */
  flush: boolean;
  /** pwrite/trim/writeZeroes honour `fua` (durable before they resolve). */
  fua: boolean;
  /** trim() may release space; advertised as NBD_FLAG_SEND_TRIM. */
  trim: boolean;
  /** writeZeroes() is supported (NBD_FLAG_SEND_WRITE_ZEROES). */
  zero: boolean;
  /** writeZeroes({ fast: true }) answers quickly, ENOTSUP when it cannot be fast. */
  fastZero: boolean;
  /** Every connection sees the others' flushed writes (NBD_FLAG_CAN_MULTI_CONN). */
  multiConn: boolean;
  /** cache() does something useful (NBD_FLAG_SEND_CACHE). */
  cache: boolean;
  /** extents() can tell holes and zeroes from data. */
  extents: boolean;
}

export interface WriteOptions {
  /** Durable before resolving (NBD_CMD_FLAG_FUA). */
  fua: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range may become a hole (no NBD_CMD_FLAG_NO_HOLE). */
  mayTrim: boolean;
  /** NBD_CMD_FLAG_FAST_ZERO: reject with BackendError(NBD_ENOTSUP) rather than be slow. */
  fast: boolean;
}

export interface Backend {
  /** Size in bytes; fixed while served. */
  readonly size: number;
  readonly capabilities: BackendCapabilities;
  /** One line for people: what is served, e.g. "/dev/sda (block device)". */
  readonly description: string;
  /** Fill `buf` entirely with the bytes at `offset`. */
  pread(buf: Buffer, offset: number): Promise<void>;
  /** Write the buffers, in order, contiguously from `offset`. */
  pwrite(data: readonly Buffer[], offset: number, options: WriteOptions): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Hint that the range is no longer needed (may read back as anything). */
  trim(offset: number, length: number, options: WriteOptions): Promise<void>;
  /** Make the range read back as zeroes. */
  writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void>;
  /** Prefetch the range (NBD_CMD_CACHE); purely a performance hint. */
  cache(offset: number, length: number): Promise<void>;
  /**
   * base:allocation status from `offset`: at least one extent and at most
   * `maxExtents`, consecutive, each of nonzero length; the total may be
   * shorter or longer than `length`. Flags 0 ("data or unknown") are always
   * a safe answer.
   */
  extents(offset: number, length: number, maxExtents: number): Promise<BlockExtent[]>;
  /** Release the backend (after flushing); no calls follow. */
  close(): Promise<void>;
}
