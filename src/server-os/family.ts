// Which initramfs generator the laptop OS uses. Reads the file system under
// `root`; no processes are run.
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { StiefelError } from '../errors';

export const INITRAMFS_FAMILIES = ['initramfs-tools', 'dracut', 'mkinitcpio'] as const;
export type InitramfsFamily = (typeof INITRAMFS_FAMILIES)[number];

/** The programs that reveal each family, as paths inside the laptop OS. */
const EVIDENCE: Record<InitramfsFamily, string[]> = {
  'initramfs-tools': ['usr/sbin/update-initramfs', 'sbin/update-initramfs'],
  dracut: ['usr/bin/dracut', 'usr/sbin/dracut', 'sbin/dracut'],
  mkinitcpio: ['usr/bin/mkinitcpio'],
};

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

export async function detectFamily(root: string): Promise<{ family: InitramfsFamily; evidence: string }> {
  const found: Array<{ family: InitramfsFamily; evidence: string }> = [];
  for (const family of INITRAMFS_FAMILIES) {
    for (const rel of EVIDENCE[family]) {
      if (await exists(join(root, rel))) {
        found.push({ family, evidence: `/${rel}` });
        break;
      }
    }
  }
  if (found.length === 1) return found[0]!;
  if (found.length === 0) {
    throw new StiefelError(
      'E_NO_INITRAMFS_FAMILY',
      `no initramfs generator found under ${root} (looked for update-initramfs, dracut and mkinitcpio); install one, or pass --family`,
    );
  }
  throw new StiefelError(
    'E_SEVERAL_INITRAMFS_FAMILIES',
    `several initramfs generators found under ${root} (${found.map((f) => `${f.family}: ${f.evidence}`).join(', ')}); pass --family with the one that builds your initrd`,
  );
}
