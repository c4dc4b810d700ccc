#!/bin/sh
# stiefelsystem: when the command line asks for the laptop's disk, attach it
# once udev has settled (the NIC driver is loaded by then).
if getarg stiefel.mac= > /dev/null; then
	/sbin/initqueue --settled --onetime --unique --name stiefel-attach /sbin/stiefel-attach
fi
