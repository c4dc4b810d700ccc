// Kernel pairs: `vmlinuz-VERSION` next to `initrd.img-VERSION` (Debian,
// Ubuntu), `initramfs-VERSION.img` (Fedora, Arch) or `initrd-VERSION`
// (openSUSE) or `initramfs-VERSION` (Alpine), newest version first by the
// UAPI version comparison. The command line is not in these files: it comes
// from the caller (the config, or /etc/kernel/cmdline of the root file
// system when the pair is on it). Arch's CPU microcode images (intel-ucode.img,
// amd-ucode.img) go first, as its boot loaders load them. Pure: works on a
// directory listing.
import { compareVersions } from './version';
import { emptyResult, normalizeBootPath, type ParseResult } from './types';

const KERNEL = /^(?:vmlinuz|vmlinux|bzImage|kernel)-(.+)$/;
const MICROCODE = ['intel-ucode.img', 'amd-ucode.img'];

export function findKernelPairs(dir: string, names: readonly string[], options: { cmdline?: string | null } = {}): ParseResult {
  const result = emptyResult();
  const set = new Set(names);
  const kernels: { name: string; version: string }[] = [];
  for (const name of names) {
    const m = KERNEL.exec(name);
    if (!m) continue;
    const version = m[1]!;
    if (/\.(old|bak|sig|signed|efi|hmac|sha\d*|asc)$/i.test(version) || version.startsWith('.')) continue;
    kernels.push({ name, version });
  }
  kernels.sort((a, b) => -compareVersions(a.version, b.version) || (a.name < b.name ? -1 : 1));
  const microcode = MICROCODE.filter((n) => set.has(n));
  for (const k of kernels) {
    const initrd = [`initrd.img-${k.version}`, `initramfs-${k.version}.img`, `initrd-${k.version}`, `initramfs-${k.version}`, `initrd-${k.version}.img`].find((n) => set.has(n));
    const what = normalizeBootPath(k.name, dir);
    if (!initrd) {
      result.skipped.push({
        source: 'kernel-pair',
        what,
        reason: `no initramfs next to it (looked for initrd.img-${k.version}, initramfs-${k.version}.img, initrd-${k.version}); booting over the network needs one`,
      });
      continue;
    }
    result.candidates.push({
      id: k.name,
      title: `Linux ${k.version}`,
      version: k.version,
      kernel: { path: what },
      initrds: [...microcode, initrd].map((n) => ({ path: normalizeBootPath(n, dir) })),
      cmdline: options.cmdline ?? null,
      source: 'kernel-pair',
      isDefault: false,
    });
  }
  if (result.candidates[0]) result.candidates[0].isDefault = true;
  if (microcode.length && result.candidates.length) result.notes.push(`${dir}: microcode ${microcode.join(', ')} is loaded before each initramfs`);
  return result;
}
