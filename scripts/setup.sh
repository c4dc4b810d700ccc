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
  curl openssl
  libnbd-bin qemu-utils fio
  nbdkit nbd-server
  qemu-system-x86 linux-image-amd64
  kexec-tools wireguard-tools busybox-static cryptsetup-bin lvm2
  systemd-boot-efi dosfstools mtools fdisk gdisk
  debootstrap patch
  lintian
"

missing=""
for p in $PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    *"install ok installed"*) ;;
    *) missing="$missing $p" ;;
  esac
done

if [ "${1:-}" = "--check" ]; then
  if [ -n "$missing" ]; then
    echo "missing Debian packages:$missing (run: sudo scripts/setup.sh)" >&2
    exit 1
  fi
  exit 0
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
