// The laptop's boot-menu entry "stiefelsystem: serve this disk", so that a
// laptop that is switched off can start as the server: a snippet in
// /etc/grub.d that grub-mkconfig turns into a menu entry, or a
// BootLoaderSpec entry on the ESP for systemd-boot. Neither becomes the
// default. Pure: text from facts.

/** Where stiefelOS for this laptop is built (setup-server-os, the kernel hook). */
export const STIEFELOS_DIR = '/boot/stiefelsystem';
export const MENU_TITLE = 'stiefelsystem: serve this disk';
export const GRUB_SNIPPET_PATH = '/etc/grub.d/42_stiefelsystem';
export const BLS_ENTRY_NAME = 'stiefelsystem.conf';

export type BootMenu =
  | { kind: 'grub'; /** The distribution's command that rewrites grub.cfg. */ update: string[] }
  /** `esp`: the ESP's mount point in the laptop OS (/boot/efi, /efi or /boot). */
  | { kind: 'systemd-boot'; esp: string }
  | { kind: 'none'; why: string };

/**
 * The /etc/grub.d snippet. grub-mkconfig runs it with its helper library
 * loaded; it finds the device and path of /boot/stiefelsystem the way
 * 10_linux finds the kernels (a separate /boot partition, LVM, btrfs).
 */
export function grubSnippet(cmdline: string): string {
  return `#!/bin/sh
# stiefelsystem (written by 'stiefelctl setup-server-os'; --uninstall removes it):
# a boot-menu entry that starts stiefelOS as the server of this disk.
set -e
. "$pkgdatadir/grub-mkconfig_lib"
dir=${STIEFELOS_DIR}
[ -f "$dir/vmlinuz" ] && [ -f "$dir/initrd.img" ] || exit 0
device=$(\${grub_probe} --target=device "$dir")
path=$(make_system_path_relative_to_its_root "$dir")
echo "Found stiefelOS: $dir" >&2
cat <<EOF
menuentry '${MENU_TITLE}' --class stiefelsystem --class os {
EOF
prepare_grub_to_access_device "$device" | sed -e 's/^/\\t/'
cat <<EOF
	echo 'Loading stiefelOS ...'
	linux $path/vmlinuz ${cmdline}
	initrd $path/initrd.img
}
EOF
`;
}

/**
 * The BootLoaderSpec type #1 entry for systemd-boot. Its sort-key puts it
 * after the laptop OS's own entries, so it is never the default by order.
 */
export function blsEntry(cmdline: string, espRelativeDir: string): string {
  return `# stiefelsystem (written by 'stiefelctl setup-server-os'; --uninstall removes it)
title      ${MENU_TITLE}
sort-key   zz-stiefelsystem
linux      ${espRelativeDir}/vmlinuz
initrd     ${espRelativeDir}/initrd.img
options    ${cmdline}
`;
}

/** Where the ESP copy of stiefelOS goes, inside the ESP. */
export const ESP_STIEFELOS_DIR = '/stiefelsystem';
