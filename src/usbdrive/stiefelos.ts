// stiefelOS for the stick: built here by build-image with the config and the
// secret inside (the desktop's client role needs both), or taken from
// --image DIR after checking that it is stiefelOS and carries this config's
// secret, so that a stick that could never authenticate is not written.
import { spawn } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { createGunzip } from 'node:zlib';
import { parseDocument } from 'yaml';
import { parseConfigText } from '../config';
import { NewcScanner } from '../cpio/newc-scan';
import { StiefelError, errnoCode } from '../errors';
import { BzImageError, readBzImageInfo } from '../image/bzimage';
import { IMAGE_PATHS } from '../image/build';

export interface StiefelOsFiles {
  vmlinuz: string;
  initrd: string;
  release: string;
  vmlinuzBytes: number;
  initrdBytes: number;
}

/**
 * The config as it goes into the stick's stiefelOS: the user's file with
 * `secret` pointing at the image's copy of the secret (comments kept).
 * Other keys are the laptop's and the desktop's alike and stay as they are.
 */
export function stickConfigText(text: string, file: string): string {
  // parseConfigText says what is wrong with the file, with the line.
  parseConfigText(text, file);
  const doc = parseDocument(text, { uniqueKeys: true });
  doc.set('secret', posix.basename(IMAGE_PATHS.secret));
  const out = doc.toString();
  // The result must still be a valid config whose secret is the image's.
  const check = parseConfigText(out, IMAGE_PATHS.config);
  if (check.secret !== IMAGE_PATHS.secret) throw new Error(`stick config names the secret ${check.secret}`);
  return out;
}

/** Detects the compression of an initrd from its first bytes. */
export function initrdCompression(head: Uint8Array): 'zstd' | 'gzip' | 'none' | 'unknown' {
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  if (head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (Buffer.from(head.subarray(0, 6)).toString('latin1') === '070701') return 'none';
  return 'unknown';
}

const WANTED = new Set([IMAGE_PATHS.config.slice(1), IMAGE_PATHS.secret.slice(1), 'init', IMAGE_PATHS.release.slice(1)]);

export interface InitrdFacts {
  /** Paths (without the leading '/') of the wanted files found, with their bytes. */
  files: Map<string, Buffer>;
}

/**
 * Streams the initrd through its decompressor and a cpio scanner until the
 * few files looked for are found (they sort early: /etc, /init), then stops.
 */
export async function readInitrdFacts(initrd: string, options: { zstd?: string; signal?: AbortSignal } = {}): Promise<InitrdFacts> {
  const fh = await open(initrd, 'r');
  const head = Buffer.alloc(8);
  try {
    await fh.read(head, 0, 8, 0);
  } finally {
    await fh.close();
  }
  const kind = initrdCompression(head);
  if (kind === 'unknown') throw new StiefelError('E_USB_IMAGE', `${initrd} is not a stiefelOS initrd (neither zstd, gzip nor cpio)`);
  const files = new Map<string, Buffer>();
  const scanner = new NewcScanner((p) => WANTED.has(p), 1 << 20);
  const source = createReadStream(initrd);
  let child: ReturnType<typeof spawn> | undefined;
  let stream: NodeJS.ReadableStream;
  if (kind === 'zstd') {
    child = spawn(options.zstd ?? 'zstd', ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'ignore'] });
    source.pipe(child.stdin!);
    child.stdin!.on('error', () => undefined);
    stream = child.stdout!;
  } else if (kind === 'gzip') {
    stream = source.pipe(createGunzip());
  } else {
    stream = source;
  }
  try {
    await new Promise<void>((resolve, reject) => {
      const finish = (err?: Error): void => {
        stream.removeAllListeners('data');
        if (err) reject(err);
        else resolve();
      };
      child?.on('error', (err) => finish(errnoCode(err) === 'ENOENT' ? new StiefelError('E_USB_TOOL', "zstd is not installed: install 'zstd'") : err));
      stream.on('data', (chunk: Buffer) => {
        try {
          for (const e of scanner.push(chunk)) if (e.data) files.set(e.path, e.data);
        } catch (err) {
          return finish(new StiefelError('E_USB_IMAGE', `${initrd} is not a readable cpio archive: ${(err as Error).message}`));
        }
        if (files.size === WANTED.size) finish();
      });
      stream.on('end', () => finish());
      stream.on('error', (err: Error) => finish(new StiefelError('E_USB_IMAGE', `cannot unpack ${initrd}: ${err.message}`)));
      options.signal?.addEventListener('abort', () => finish(new StiefelError('E_ABORTED', 'interrupted while reading the image')), { once: true });
    });
  } finally {
    source.destroy();
    child?.kill();
  }
  return { files };
}

/** Checks DIR/vmlinuz and DIR/initrd.img: stiefelOS, with a config and the same secret as `secret`. */
export async function checkStiefelOsImage(dir: string, secret: Buffer, options: { zstd?: string; signal?: AbortSignal } = {}): Promise<StiefelOsFiles> {
  const vmlinuz = posix.join(dir, 'vmlinuz');
  const initrd = posix.join(dir, 'initrd.img');
  const rebuild = `run 'stiefelctl build-image --out ${dir} --config CONFIG --secret SECRET', or leave out --image to build it now`;
  const sizes: number[] = [];
  for (const f of [vmlinuz, initrd]) {
    const st = await stat(f).catch(() => undefined);
    if (!st?.isFile()) throw new StiefelError('E_USB_IMAGE', `no stiefelOS image in ${dir} (${posix.basename(f)} is missing): ${rebuild}`);
    sizes.push(st.size);
  }
  const fh = await open(vmlinuz, 'r');
  const head = Buffer.alloc(64 * 1024);
  try {
    await fh.read(head, 0, head.length, 0);
  } finally {
    await fh.close();
  }
  let release: string;
  try {
    release = readBzImageInfo(head).release;
  } catch (err) {
    if (err instanceof BzImageError) throw new StiefelError('E_USB_IMAGE', `${vmlinuz} is not a Linux kernel image: ${err.message}`);
    throw err;
  }
  const { files } = await readInitrdFacts(initrd, options);
  if (!files.has('init') || !files.has(IMAGE_PATHS.release.slice(1))) throw new StiefelError('E_USB_IMAGE', `${initrd} is not stiefelOS (no /init or ${IMAGE_PATHS.release}): ${rebuild}`);
  const config = files.get(IMAGE_PATHS.config.slice(1));
  if (!config) throw new StiefelError('E_USB_IMAGE', `the stiefelOS image in ${dir} carries no config, so its client cannot start: ${rebuild}`);
  let embedded;
  try {
    embedded = parseConfigText(config.toString('utf8'), IMAGE_PATHS.config);
  } catch (err) {
    throw new StiefelError('E_USB_IMAGE', `the image's own ${(err as Error).message} (inside ${initrd}): ${rebuild}`, { cause: err });
  }
  if (embedded.secret !== IMAGE_PATHS.secret) {
    throw new StiefelError('E_USB_IMAGE', `the config inside ${initrd} names the secret ${embedded.secret}, but the image has it at ${IMAGE_PATHS.secret}: ${rebuild}`);
  }
  const inside = files.get(IMAGE_PATHS.secret.slice(1));
  if (!inside) throw new StiefelError('E_USB_IMAGE', `the stiefelOS image in ${dir} carries no secret, so the desktop could not prove itself to the laptop: ${rebuild}`);
  if (inside.length !== secret.length || !timingSafeEqual(inside, secret)) {
    throw new StiefelError('E_USB_IMAGE', `the stiefelOS image in ${dir} carries another secret than the config's: the laptop would not answer this stick; ${rebuild}`);
  }
  return { vmlinuz, initrd, release, vmlinuzBytes: sizes[0]!, initrdBytes: sizes[1]! };
}
