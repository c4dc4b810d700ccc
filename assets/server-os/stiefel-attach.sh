#!/bin/sh
# stiefelsystem: attach the laptop's disk in the laptop OS's own initramfs.
#
# Shared by every initramfs family (initramfs-tools, dracut, mkinitcpio); each
# family's thin adapter runs this before the root file system is mounted.
# POSIX sh: runs under busybox ash, dash, klibc sh and bash.
#
# Does nothing, at once, unless the kernel command line carries stiefel.mac=
# (put there by `stiefelctl client` on the desktop). Then:
#   1. reads this boot's link settings and keys from /etc/stiefelsystem/link.conf
#      (a cpio the client appended to the initrd; never the command line),
#   2. finds the NIC with that MAC, renames it (stiefellink), brings it up with
#      its IPv6 link-local address,
#   3. with WireGuard: sets up the tunnel interface to the laptop,
#   4. attaches the laptop's disk as /dev/nbd0 with nbd-client (netlink, marked
#      so that systemd leaves it alone through switch-root and shutdown),
#   5. waits for its partitions, so that the usual root= (UUID, PARTUUID, LVM,
#      LUKS) is found as if the disk were local,
#   6. writes /run/stiefelsystem/nbd.conf for stiefel-nbd-reconnect, which
#      reconnects the disk in the booted OS when its connection dies.
# Exit status: 0 when not asked for or attached; 1 with a message otherwise.

STIEFEL_WG_IFNAME=stiefelwg
STIEFEL_NBD_DEVICE=/dev/nbd0

stiefel_say() {
	echo "stiefelsystem: $*" >&2
	[ -w /dev/kmsg ] && echo "<6>stiefelsystem: $*" > /dev/kmsg 2>/dev/null
	return 0
}

stiefel_fail() {
	stiefel_say "ERROR: $*"
	exit 1
}

# The value of a stiefel.NAME= word on the command line, empty if absent.
stiefel_param() {
	read -r _cmdline < /proc/cmdline
	for w in $_cmdline; do
		case "$w" in
			"stiefel.$1="*) echo "${w#stiefel.$1=}"; return 0 ;;
		esac
	done
	return 0
}

# Waits up to $1 tenths of a second for the shell condition in $2.
stiefel_wait() {
	_n=$1
	while [ "$_n" -gt 0 ]; do
		eval "$2" && return 0
		sleep 0.1 2>/dev/null || sleep 1
		_n=$((_n - 1))
	done
	eval "$2"
}

stiefel_nic_by_mac() {
	for _d in /sys/class/net/*; do
		[ -r "$_d/address" ] || continue
		if [ "$(cat "$_d/address")" = "$1" ]; then
			echo "${_d##*/}"
			return 0
		fi
	done
	return 1
}

stiefel_link_local_ready() {
	_a=$(ip -6 -o addr show dev "$1" scope link 2>/dev/null)
	case "$_a" in
		*tentative*) return 1 ;;
		*"inet6 fe80"*) return 0 ;;
	esac
	return 1
}

stiefel_main() {
	# Lower case, as /sys/class/net/*/address spells it (stiefelctl client writes it so).
	mac=$(stiefel_param mac)
	[ -n "$mac" ] || return 0

	if [ -e /sys/block/nbd0/pid ] || [ "$(cat /sys/block/nbd0/size 2>/dev/null || echo 0)" != 0 ]; then
		stiefel_say "$STIEFEL_NBD_DEVICE is already attached"
		return 0
	fi

	conf=$(stiefel_param conf)
	conf=${conf:-/etc/stiefelsystem/link.conf}
	if [ -r "$conf" ]; then
		# shellcheck disable=SC1090
		. "$conf"
	fi
	# The command line gives the same settings (without keys) where there is no link.conf.
	STIEFEL_IFNAME=${STIEFEL_IFNAME:-$(stiefel_param ifname)}
	STIEFEL_IFNAME=${STIEFEL_IFNAME:-stiefellink}
	STIEFEL_SERVER=${STIEFEL_SERVER:-$(stiefel_param server)}
	STIEFEL_NBD_HOST=${STIEFEL_NBD_HOST:-$(stiefel_param nbd_host)}
	STIEFEL_NBD_HOST=${STIEFEL_NBD_HOST:-$STIEFEL_SERVER}
	STIEFEL_NBD_PORT=${STIEFEL_NBD_PORT:-$(stiefel_param nbd_port)}
	STIEFEL_NBD_PORT=${STIEFEL_NBD_PORT:-10809}
	STIEFEL_NBD_EXPORT=${STIEFEL_NBD_EXPORT:-$(stiefel_param nbd_export)}
	[ -n "$STIEFEL_NBD_HOST" ] || stiefel_fail "no server address: neither $conf nor stiefel.server= on the command line"

	stiefel_say "looking for the NIC $mac"
	modprobe -q nbd 2>/dev/null || modprobe nbd || stiefel_fail "cannot load the nbd module"
	stiefel_wait 300 'dev=$(stiefel_nic_by_mac "$mac")' ||
		stiefel_fail "no network interface with MAC $mac appeared within 30 s (is its driver in the initramfs?)"

	if [ "$dev" != "$STIEFEL_IFNAME" ]; then
		ip link set dev "$dev" down
		ip link set dev "$dev" name "$STIEFEL_IFNAME" || stiefel_fail "cannot rename $dev to $STIEFEL_IFNAME"
	fi
	# The cable's MTU, when the laptop asked for one (link.mtu): a NIC that
	# does not take it keeps its own, and TCP keeps to the smaller.
	if [ -n "${STIEFEL_LINK_MTU:-}" ]; then
		ip link set dev "$STIEFEL_IFNAME" mtu "$STIEFEL_LINK_MTU" ||
			stiefel_say "$STIEFEL_IFNAME does not take MTU $STIEFEL_LINK_MTU; it stays at $(cat "/sys/class/net/$STIEFEL_IFNAME/mtu")"
	fi
	# A point-to-point cable: duplicate address detection only costs time.
	echo 0 > "/proc/sys/net/ipv6/conf/$STIEFEL_IFNAME/accept_dad" 2>/dev/null
	ip link set dev "$STIEFEL_IFNAME" up || stiefel_fail "cannot bring $STIEFEL_IFNAME up"
	stiefel_wait 200 'stiefel_link_local_ready "$STIEFEL_IFNAME"' ||
		stiefel_fail "$STIEFEL_IFNAME got no IPv6 link-local address within 20 s (cable plugged in?)"

	host=$STIEFEL_NBD_HOST
	if [ -n "$STIEFEL_WG_PRIVATE_KEY" ]; then
		modprobe -q wireguard 2>/dev/null || modprobe wireguard || stiefel_fail "cannot load the wireguard module"
		ip link add "$STIEFEL_WG_IFNAME" type wireguard || stiefel_fail "cannot create the WireGuard interface"
		# Inside the link's MTU, 80 bytes for WireGuard over IPv6 (the kernel's 1420 under 1500).
		if [ -n "${STIEFEL_LINK_MTU:-}" ]; then
			ip link set dev "$STIEFEL_WG_IFNAME" mtu "$(($(cat "/sys/class/net/$STIEFEL_IFNAME/mtu") - 80))" ||
				stiefel_say "cannot set the MTU of $STIEFEL_WG_IFNAME"
		fi
		mkdir -p /run/stiefelsystem
		keyfile=/run/stiefelsystem/wg.key
		(umask 077 && echo "$STIEFEL_WG_PRIVATE_KEY" > "$keyfile")
		case "$STIEFEL_WG_PEER_ADDRESS" in
			*:*) allowed="$STIEFEL_WG_PEER_ADDRESS/128" ;;
			*) allowed="$STIEFEL_WG_PEER_ADDRESS/32" ;;
		esac
		case "$STIEFEL_SERVER" in
			*:*) endpoint="[$STIEFEL_SERVER%$STIEFEL_IFNAME]:$STIEFEL_WG_PEER_PORT" ;;
			*) endpoint="$STIEFEL_SERVER:$STIEFEL_WG_PEER_PORT" ;;
		esac
		wg set "$STIEFEL_WG_IFNAME" private-key "$keyfile" \
			peer "$STIEFEL_WG_PEER_PUBLIC_KEY" endpoint "$endpoint" allowed-ips "$allowed" persistent-keepalive 15 ||
			{ rm -f "$keyfile"; stiefel_fail "cannot configure WireGuard"; }
		rm -f "$keyfile"
		echo 0 > "/proc/sys/net/ipv6/conf/$STIEFEL_WG_IFNAME/accept_dad" 2>/dev/null
		ip addr add "$STIEFEL_WG_ADDRESS" dev "$STIEFEL_WG_IFNAME" || stiefel_fail "cannot address $STIEFEL_WG_IFNAME"
		ip link set dev "$STIEFEL_WG_IFNAME" up || stiefel_fail "cannot bring $STIEFEL_WG_IFNAME up"
		host=$STIEFEL_WG_PEER_ADDRESS
		stiefel_say "WireGuard tunnel $STIEFEL_WG_IFNAME to $endpoint is up"
	else
		case "$host" in
			fe80:*) host="$host%$STIEFEL_IFNAME" ;;
		esac
	fi

	# The logical block size must be the laptop disk's own (512 on most disks):
	# partition tables count in those units.
	set -- "$host" "$STIEFEL_NBD_PORT" "$STIEFEL_NBD_DEVICE" -b "${STIEFEL_NBD_BLOCK_SIZE:-512}" -systemd-mark
	[ -n "$STIEFEL_NBD_EXPORT" ] && set -- "$@" -N "$STIEFEL_NBD_EXPORT"
	# Several connections (server.nbd.connections; the server advertises
	# CAN_MULTI_CONN): the kernel's block layer gives each CPU's requests to one.
	# With more than one, the kernel's NBD driver counts a request that waits
	# past the block layer's timeout (30 s when none is set) as a dead
	# connection and fails it once all are "dead" (nbd_xmit_timeout): a pulled
	# cable, or a 30 s stall, would be I/O errors. With one connection and no
	# timeout it waits for ever. So with several: a day.
	attach_timeout=0
	if [ "${STIEFEL_NBD_CONNECTIONS:-1}" -gt 1 ]; then
		attach_timeout=${STIEFEL_NBD_TIMEOUT_S:-86400}
		set -- "$@" -C "$STIEFEL_NBD_CONNECTIONS" -t "$attach_timeout"
	fi
	stiefel_say "attaching $STIEFEL_NBD_DEVICE from $host port $STIEFEL_NBD_PORT (connections: ${STIEFEL_NBD_CONNECTIONS:-1})"
	tries=0
	until nbd-client "$@"; do
		tries=$((tries + 1))
		[ "$tries" -ge 30 ] && stiefel_fail "nbd-client could not attach the laptop's disk from $host port $STIEFEL_NBD_PORT"
		sleep 1
	done

	stiefel_wait 100 '[ "$(cat /sys/block/nbd0/size 2>/dev/null || echo 0)" != 0 ]' ||
		stiefel_fail "$STIEFEL_NBD_DEVICE stayed empty"
	# The kernel reads the partition table of a newly connected nbd device at
	# its next open, and udev does not open nbd disks: open it once ourselves.
	# The partitions then appear as uevents and udev makes the /dev/disk/by-* links.
	exec 3< "$STIEFEL_NBD_DEVICE" && exec 3<&-
	command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=10 2>/dev/null
	parts=
	for _p in /sys/block/nbd0/nbd0p*; do
		[ -e "$_p" ] && parts="$parts ${_p##*/}"
	done
	timeout=
	[ "${STIEFEL_NBD_CONNECTIONS:-1}" -gt 1 ] && timeout="; requests wait up to $(($(cat /sys/block/nbd0/queue/io_timeout 2>/dev/null || echo 0) / 1000)) s"
	stiefel_say "$STIEFEL_NBD_DEVICE attached: $(($(cat /sys/block/nbd0/size) / 2048)) MiB, partitions:${parts:- none}$timeout"
	# For stiefel-nbd-reconnect in the booted OS (a new connection when this
	# one dies): where the disk is, and the request timeout set here, which
	# it puts back when it stops.
	mkdir -p /run/stiefelsystem
	printf 'STIEFEL_NBD_HOST=%s\nSTIEFEL_NBD_PORT=%s\nSTIEFEL_NBD_EXPORT=%s\nSTIEFEL_NBD_DEVICE=%s\nSTIEFEL_NBD_TIMEOUT_S=%s\n' \
		"$host" "$STIEFEL_NBD_PORT" "$STIEFEL_NBD_EXPORT" "$STIEFEL_NBD_DEVICE" "$attach_timeout" > /run/stiefelsystem/nbd.conf
	# For the goodbye at the very end of shutdown (systemd-shutdown's hook):
	# /run survives the switch to the real root, and the token stays root-only.
	if [ -n "$STIEFEL_GOODBYE_TOKEN" ]; then
		mkdir -p /run/stiefelsystem
		(umask 077 && printf 'STIEFEL_GOODBYE_HOST=%s\nSTIEFEL_GOODBYE_PORT=%s\nSTIEFEL_GOODBYE_TOKEN=%s\n' \
			"$host" "${STIEFEL_GOODBYE_PORT:-4645}" "$STIEFEL_GOODBYE_TOKEN" > /run/stiefelsystem/goodbye.conf)
	fi
	return 0
}

stiefel_main "$@"
