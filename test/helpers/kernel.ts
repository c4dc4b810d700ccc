// The Debian kernel that scripts/setup.sh installs (linux-image-amd64) for
// stiefelOS and the QEMU tests. Its point release changes with Debian's
// security updates, so tests look it up instead of naming it.
import { existsSync, readdirSync, readFileSync } from 'node:fs';

export interface DebianKernel {
  /** /boot/vmlinuz-RELEASE */
  path: string;
  /** as `uname -r` prints it, N.N.N-NN-amd64 */
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

/**
 * The path of module NAME inside the installed kernel's modules directory, as
 * its modules.dep names it (`kernel/drivers/net/virtio_net.ko`, or `.ko.xz`
 * where the kernel ships them so). Fails with the reason when that kernel has
 * no such module (built in, or not built).
 */
export function hostModulePath(name: string, kernel: DebianKernel = debianKernel()): string {
  const dep = readFileSync(`${kernel.modulesDir}/modules.dep`, 'utf8');
  const want = name.replace(/-/g, '_');
  for (const line of dep.split('\n')) {
    const path = line.slice(0, line.indexOf(':'));
    const base = path.slice(path.lastIndexOf('/') + 1).replace(/\.ko(\.\w+)?$/, '').replace(/-/g, '_');
    if (base === want) return path;
  }
  throw new Error(`kernel ${kernel.release} has no module ${name} in ${kernel.modulesDir}/modules.dep (built in, or not built): the test needs another module`);
}

/** The modules.dep dependencies of the module at PATH (paths as modules.dep names them). */
export function hostModuleDeps(path: string, kernel: DebianKernel = debianKernel()): string[] {
  const dep = readFileSync(`${kernel.modulesDir}/modules.dep`, 'utf8');
  const line = dep.split('\n').find((l) => l.startsWith(`${path}:`));
  if (line === undefined) throw new Error(`${path} is not in ${kernel.modulesDir}/modules.dep`);
  return line.slice(path.length + 1).split(/\s+/).filter(Boolean);
}
