// The Debian kernel that scripts/setup.sh installs (linux-image-amd64) for
// stiefelOS and the QEMU tests. Its point release changes with Debian's
// security updates, so tests look it up instead of naming it.
import { existsSync, readdirSync } from 'node:fs';

export interface DebianKernel {
  /** /boot/vmlinuz-RELEASE */
  path: string;
  /** e.g. 6.1.0-56-amd64 */
  release: string;
  /** /lib/modules/RELEASE */
  modulesDir: string;
}

function compareReleases(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

export function debianKernel(): DebianKernel {
  const releases = readdirSync('/boot')
    .filter((n) => /^vmlinuz-.*-amd64$/.test(n))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((r) => existsSync(`/lib/modules/${r}/modules.dep`))
    .sort(compareReleases);
  const release = releases.at(-1);
  if (!release) {
    throw new Error("no Debian kernel with modules in /boot and /lib/modules: run 'sudo scripts/setup.sh' (installs linux-image-amd64)");
  }
  return { path: `/boot/vmlinuz-${release}`, release, modulesDir: `/lib/modules/${release}` };
}
