#!/bin/bash
# stiefelsystem (installed by `stiefelctl setup-server-os`): a dracut module
# that attaches the laptop's disk over the network before the root file
# system is mounted, when the command line asks for it (stiefel.mac=).

check() {
	require_binaries nbd-client ip wg || return 1
	# Only when asked for, by /etc/dracut.conf.d/stiefelsystem.conf.
	return 255
}

depends() {
	echo udev-rules
	return 0
}

installkernel() {
	instmods nbd wireguard
	# The desktop's NIC is not this machine's: every wired network driver goes in,
	# also in host-only mode.
	hostonly='' instmods virtio_net =drivers/net/ethernet =drivers/net/usb
}

install() {
	inst_multiple nbd-client ip wg
	inst_script /usr/lib/stiefelsystem/stiefel-attach /sbin/stiefel-attach
	inst_hook cmdline 90 "$moddir/stiefel-cmdline.sh"
	dracut_need_initqueue
}
