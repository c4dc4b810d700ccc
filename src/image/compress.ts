// Streams the cpio archive through a compressor into a file, hashing what is
// written. zstd runs as the `zstd` program (Node 20's zlib has no zstd);
// gzip is node:zlib; `none` writes the archive as it is.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createGzip } from 'node:zlib';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StiefelError, errnoCode } from '../errors';
import { PACKAGES, formatPackages } from './packages';

export type Compression = 'zstd' | 'gzip' | 'none';
export const COMPRESSIONS: readonly Compression[] = ['zstd', 'gzip', 'none'];

/** Levels chosen by measurement (see BENCHMARKS.md). */
export const DEFAULT_LEVEL: Record<Compression, number> = { zstd: 9, gzip: 6, none: 0 };

export interface CompressOptions {
  method: Compression;
  level?: number;
  /** The zstd program, when method is zstd. */
  zstd?: string;
  signal?: AbortSignal;
  /** Called as bytes go in and come out. */
  onProgress?: (bytesIn: number, bytesOut: number) => void;
  /** The file's mode (0600 when the image holds the secret). */
  mode?: number;
}

export interface CompressResult {
  bytesIn: number;
  bytesOut: number;
  sha256: string;
}

/** Writes `chunks`, compressed, to `outPath` (created or truncated). */
export async function writeCompressed(
  chunks: Iterable<Buffer>,
  outPath: string,
  options: CompressOptions,
): Promise<CompressResult> {
  const hash = createHash('sha256');
  let bytesIn = 0;
  let bytesOut = 0;
  const report = (): void => options.onProgress?.(bytesIn, bytesOut);
  const counterIn = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytesIn += chunk.length;
      cb(null, chunk);
    },
  });
  const file = await open(outPath, 'w', options.mode ?? 0o644);
  const sink = file.createWriteStream();
  const counterOut = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytesOut += chunk.length;
      hash.update(chunk);
      report();
      cb(null, chunk);
    },
  });
  const source = Readable.from(chunks, { objectMode: false, highWaterMark: 1 << 20 });
  const level = options.level ?? DEFAULT_LEVEL[options.method];
  try {
    if (options.method === 'none') {
      await pipeline(source, counterIn, counterOut, sink, { signal: options.signal });
    } else if (options.method === 'gzip') {
      await pipeline(source, counterIn, createGzip({ level }), counterOut, sink, { signal: options.signal });
    } else {
      await zstdPipeline(source.pipe(counterIn), counterOut, sink, options.zstd ?? 'zstd', level, options.signal);
    }
  } finally {
    await file.close().catch(() => undefined);
  }
  return { bytesIn, bytesOut, sha256: hash.digest('hex') };
}

async function zstdPipeline(
  input: Readable,
  counterOut: Transform,
  sink: Writable,
  zstd: string,
  level: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  // -T0: all cores; zstd's multi-threaded output does not depend on the number
  // of threads, so builds stay reproducible across machines with the same zstd.
  const args = ['-q', '-c', '-T0', `-${level}`];
  if (level > 19) args.unshift('--ultra');
  const child = spawn(zstd, args, { stdio: ['pipe', 'pipe', 'pipe'], signal });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (err) => {
      if (errnoCode(err) === 'ENOENT') {
        reject(new StiefelError('E_IMAGE_TOOL', `'${zstd}' is not installed: install ${formatPackages(PACKAGES.zstd)}, or use --compress gzip`));
      } else reject(err);
    });
    child.on('close', (code) => resolve(code));
  });
  const results = await Promise.allSettled([
    pipeline(input, child.stdin),
    pipeline(child.stdout, counterOut, sink),
    exited,
  ]);
  const exitResult = results[2];
  if (exitResult.status === 'rejected') throw exitResult.reason;
  for (const r of results) if (r.status === 'rejected') throw r.reason;
  if (exitResult.value !== 0) {
    throw new StiefelError('E_IMAGE_COMPRESS', `zstd failed (exit ${exitResult.value}): ${stderr.trim().split('\n')[0] ?? ''}`);
  }
}
