// Finding the kernel to put into stiefelOS: its image, its release (from the
// bzImage header), its modules directory and whether it can unpack a zstd
// initramfs (CONFIG_RD_ZSTD in the kernel's config file).
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { StiefelError, errnoCode } from '../errors';
import { BzImageError, readBzImageInfo } from './bzimage';

export interface KernelChoice {
  /** The kernel image file. */
  path: string;
  release: string;
  versionString: string;
  /** Size of the image file in bytes. */
  size: number;
}

async function readHead(path: string, bytes: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    const { bytesRead } = await fh.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

async function installedKernels(bootDir: string): Promise<string[]> {
  try {
    return (await readdir(bootDir))
      .filter((n) => /^(vmlinuz|bzImage)-/.test(n))
      .sort()
      .map((n) => posix.join(bootDir, n));
  } catch {
    return [];
  }
}

export interface LocateKernelOptions {
  /** --kernel, or undefined for the running kernel's image. */
  kernel?: string;
  /** The running kernel's release (`uname -r`), used when `kernel` is not given. */
  runningRelease: string;
  bootDir?: string;
}

/** The kernel image to use, with its release read from its boot header. */
export async function locateKernel(options: LocateKernelOptions): Promise<KernelChoice> {
  const bootDir = options.bootDir ?? '/boot';
  let path = options.kernel;
  if (path === undefined) {
    const candidates = [
      posix.join(bootDir, `vmlinuz-${options.runningRelease}`),
      `/lib/modules/${options.runningRelease}/vmlinuz`,
    ];
    for (const c of candidates) {
      if ((await stat(c).catch(() => undefined))?.isFile()) {
        path = c;
        break;
      }
    }
    if (path === undefined) {
      const others = await installedKernels(bootDir);
      throw new StiefelError(
        'E_IMAGE_KERNEL',
        `the running kernel ${options.runningRelease} has no image at ${candidates.join(' or ')}: pass --kernel PATH` +
          (others.length > 0 ? ` (installed: ${others.join(', ')})` : ''),
      );
    }
  }
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
    const others = await installedKernels(bootDir);
    throw new StiefelError(
      'E_IMAGE_KERNEL',
      `kernel image ${path} does not exist: pass --kernel PATH to an installed kernel` +
        (others.length > 0 ? ` (installed: ${others.join(', ')})` : ''),
    );
  }
  if (!st.isFile()) throw new StiefelError('E_IMAGE_KERNEL', `kernel image ${path} is not a regular file`);
  let head: Buffer;
  try {
    head = await readHead(path, 64 * 1024);
  } catch (err) {
    if (errnoCode(err) === 'EACCES') {
      throw new StiefelError('E_IMAGE_KERNEL', `cannot read kernel image ${path}: permission denied (run as root)`);
    }
    throw err;
  }
  try {
    const info = readBzImageInfo(head);
    return { path, release: info.release, versionString: info.versionString, size: st.size };
  } catch (err) {
    if (err instanceof BzImageError) {
      throw new StiefelError('E_IMAGE_KERNEL', `${path} is not an x86 Linux kernel image (bzImage): ${err.message}`);
    }
    throw err;
  }
}

export type RdSupport = { known: true; zstd: boolean; source: string } | { known: false };

/**
 * Whether the kernel was built with CONFIG_RD_ZSTD, from its config file:
 * /boot/config-RELEASE (Debian, Fedora), MODULES/config, MODULES/build/.config.
 */
export async function kernelZstdSupport(kernel: KernelChoice, modulesDir: string): Promise<RdSupport> {
  const candidates = [
    posix.join(posix.dirname(kernel.path), `config-${kernel.release}`),
    posix.join(modulesDir, 'config'),
    posix.join(modulesDir, 'build', '.config'),
  ];
  for (const c of candidates) {
    let text: string;
    try {
      const raw = await readFile(c);
      text = (c.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
    } catch {
      continue;
    }
    return { known: true, zstd: /^CONFIG_RD_ZSTD=y$/m.test(text), source: c };
  }
  return { known: false };
}
