// A stiefelOS that can hand itself to a desktop by PXE: the image is built
// once without config and secret (that copy is what PXE serves: it holds
// nothing a stranger on the cable could use), and the laptop's own initrd is
// that same initrd with one more cpio appended, holding the config, the
// secret and the served copy at PXE_IMAGE_DIR. The kernel unpacks
// concatenated archives in order, so the appended files simply join the tree.
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, open, readFile, rename, rm } from 'node:fs/promises';
import { posix } from 'node:path';
import { encodeNewc, initrdPadding, type CpioEntry } from '../cpio/newc';
import { IMAGE_PATHS } from './build';

/** Where the server role finds the stiefelOS it serves by PXE (config server.pxe.image). */
export const PXE_IMAGE_DIR = '/usr/lib/stiefelsystem/pxe';

export interface PxeCopyOptions {
  /** The image built without config and secret: vmlinuz, initrd.img. */
  publicDir: string;
  /** Where the laptop's image goes: vmlinuz, initrd.img (the public one plus the private part). */
  outDir: string;
  config?: string;
  secret?: string;
}

/** Writes outDir/vmlinuz and outDir/initrd.img, each through a temporary name; returns the initrd's size. */
export async function writeImageWithPxeCopy(o: PxeCopyOptions): Promise<{ initrdBytes: number; privateBytes: number; sha256: string }> {
  const pubKernel = posix.join(o.publicDir, 'vmlinuz');
  const pubInitrd = posix.join(o.publicDir, 'initrd.img');
  const publicInitrd = await readFile(pubInitrd);
  const entries: CpioEntry[] = [
    { type: 'dir', path: PXE_IMAGE_DIR.slice(1), mode: 0o755 },
    { type: 'file', path: `${PXE_IMAGE_DIR.slice(1)}/vmlinuz`, mode: 0o644, data: await readFile(pubKernel) },
    { type: 'file', path: `${PXE_IMAGE_DIR.slice(1)}/initrd.img`, mode: 0o644, data: publicInitrd },
  ];
  if (o.config !== undefined) entries.push({ type: 'file', path: IMAGE_PATHS.config.slice(1), mode: 0o644, data: await readFile(o.config) });
  if (o.secret !== undefined) entries.push({ type: 'file', path: IMAGE_PATHS.secret.slice(1), mode: 0o600, data: await readFile(o.secret) });
  const size = publicInitrd.length;
  const part = Buffer.concat([initrdPadding(size), encodeNewc(entries)]);

  const tag = randomBytes(4).toString('hex');
  const tmpKernel = posix.join(o.outDir, `.vmlinuz.${tag}.partial`);
  const tmpInitrd = posix.join(o.outDir, `.initrd.img.${tag}.partial`);
  try {
    await copyFile(pubKernel, tmpKernel);
    // With the secret inside, the initrd is a key to the laptop's disk: root only.
    await copyFile(pubInitrd, tmpInitrd);
    const fh = await open(tmpInitrd, 'r+', 0o600);
    try {
      await fh.chmod(o.secret !== undefined ? 0o600 : 0o644);
      await fh.write(part, 0, part.length, size);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmpKernel, posix.join(o.outDir, 'vmlinuz'));
    await rename(tmpInitrd, posix.join(o.outDir, 'initrd.img'));
  } catch (err) {
    await rm(tmpKernel, { force: true });
    await rm(tmpInitrd, { force: true });
    throw err;
  }
  const sha256 = createHash('sha256').update(publicInitrd).update(part).digest('hex');
  return { initrdBytes: size + part.length, privateBytes: part.length, sha256 };
}
