// Which distribution package provides a host tool, for error messages that
// name the fix. Pure data and formatting.

export interface PackageNames {
  debian: string;
  fedora: string;
  arch: string;
}

export const PACKAGES = {
  busybox: { debian: 'busybox-static', fedora: 'busybox', arch: 'busybox' },
  kexec: { debian: 'kexec-tools', fedora: 'kexec-tools', arch: 'kexec-tools' },
  ip: { debian: 'iproute2', fedora: 'iproute', arch: 'iproute2' },
  wg: { debian: 'wireguard-tools', fedora: 'wireguard-tools', arch: 'wireguard-tools' },
  cryptsetup: { debian: 'cryptsetup-bin', fedora: 'cryptsetup', arch: 'cryptsetup' },
  lvm: { debian: 'lvm2', fedora: 'lvm2', arch: 'lvm2' },
  blkid: { debian: 'util-linux', fedora: 'util-linux-core', arch: 'util-linux' },
  mount: { debian: 'mount', fedora: 'util-linux-core', arch: 'util-linux' },
  umount: { debian: 'mount', fedora: 'util-linux-core', arch: 'util-linux' },
  losetup: { debian: 'mount', fedora: 'util-linux-core', arch: 'util-linux' },
  kmod: { debian: 'kmod', fedora: 'kmod', arch: 'kmod' },
  dnsmasq: { debian: 'dnsmasq-base', fedora: 'dnsmasq', arch: 'dnsmasq' },
  ipxe: { debian: 'ipxe', fedora: 'ipxe-bootimgs-x86', arch: 'ipxe' },
  zstd: { debian: 'zstd', fedora: 'zstd', arch: 'zstd' },
  gpgv: { debian: 'gpgv', fedora: 'gnupg2', arch: 'gnupg' },
  strip: { debian: 'binutils', fedora: 'binutils', arch: 'binutils' },
  node: { debian: 'nodejs', fedora: 'nodejs', arch: 'nodejs' },
} satisfies Record<string, PackageNames>;

/** `'kexec-tools' (Debian, Fedora, Arch)` or `'cryptsetup-bin' (Debian), 'cryptsetup' (Fedora, Arch)`. */
export function formatPackages(p: PackageNames): string {
  const groups = new Map<string, string[]>();
  for (const [distro, name] of [['Debian', p.debian], ['Fedora', p.fedora], ['Arch', p.arch]] as const) {
    groups.set(name, [...(groups.get(name) ?? []), distro]);
  }
  return [...groups].map(([name, distros]) => `'${name}' (${distros.join(', ')})`).join(', ');
}

/** The package providing the kernel's modules for a release, as far as the release string tells. */
export function kernelModulesPackages(release: string): string {
  return `'linux-image-${release}' (Debian), 'kernel-modules-core'/'kernel-modules' (Fedora), the kernel package such as 'linux' (Arch)`;
}
