// The commented config that `stiefelctl init` writes. Every key is shown with
// its default; the test parses this text to make sure it stays valid.
import {
  DEFAULT_DISCOVERY_PORT,
  DEFAULT_NBD_PORT,
  DEFAULT_PAYLOAD_PORT,
  INITRAMFS_FAMILIES,
} from './schema';

export interface TemplateOptions {
  /** Value written for `secret` (relative paths are relative to the config file). */
  secret: string;
}

export function configTemplate(options: TemplateOptions): string {
  return `# stiefelsystem configuration (YAML), written by 'stiefelctl init'.
# The same file serves the laptop ('stiefelctl server') and the desktop
# ('stiefelctl client'). Relative paths are relative to this file.
# Every key is optional; the values shown are the defaults.

# The shared secret: 32 random bytes, mode 0600. The laptop and the desktop
# (its stiefelOS image) must hold the same file. Never share it otherwise.
secret: ${JSON.stringify(options.secret)}

network:
  # Interfaces to bring up and use: all (every interface but lo), or a list.
  interfaces: all
  # Interfaces never touched: names, or prefixes ending in '*' (e.g. 'wl*').
  exclude: []
  # How often new interfaces (a USB adapter plugged in later) are looked for.
  watch_interval_ms: 250

discovery:
  # UDP port; requests go to ff02::1 (IPv6 link-local multicast) on every
  # interface, and to the IPv4 broadcast address where there is one.
  port: ${DEFAULT_DISCOVERY_PORT}
  # The client repeats its request this often, on every interface at once.
  retry_interval_ms: 50
  # The client gives up after this many seconds; 0 keeps trying forever.
  timeout_s: 0
  # Requests whose clock differs more than this from the laptop's are ignored.
  max_clock_skew_s: 600
  ipv4_broadcast: true

payload:
  # HTTPS port (TLS 1.2, ECDHE-PSK with a key derived from the secret).
  port: ${DEFAULT_PAYLOAD_PORT}

server:
  # The disk the laptop OS lives on, served over NBD to one client at a time.
  # What the desktop boots is found on it the way the laptop's boot loader
  # finds it (see 'stiefelctl boot-entries'), with the initramfs family and
  # command line that 'stiefelctl setup-server-os' recorded there.
  # disk: /dev/nvme0n1
  # Or name the laptop OS's kernel, initrd and command line yourself; family
  # is how its initramfs finds the disk: ${INITRAMFS_FAMILIES.join(', ')}.
  # boot:
  #   kernel: /boot/vmlinuz
  #   initrd: /boot/initrd.img
  #   cmdline: "root=UUID=... ro quiet"
  #   family: initramfs-tools
  # Used when the disk has no record from setup-server-os:
  # family: initramfs-tools
  # cmdline: "root=UUID=... ro quiet"
  # Words added to the laptop OS's command line when it boots on the desktop.
  cmdline_append: ""
  # stiefelsystem: the laptop OS has stiefelsystem's hooks (setup-server-os);
  # family: use the initramfs family's own NBD support (needs wireguard off).
  attach: stiefelsystem
  # The disk is served only through a WireGuard tunnel whose keys are made
  # anew for every boot. Turn it off only on a trusted point-to-point cable.
  wireguard:
    enabled: true
    port: 51820
  nbd:
    port: ${DEFAULT_NBD_PORT}
    export: disk
  # After a desktop fetched the payload, the laptop waits this long for its
  # disk connection before serving another desktop.
  handoff_timeout_s: 300
  # Name shown on the desktop; defaults to the host name.
  # name: my-laptop

client:
  # Name the laptop OS's initramfs gives the desktop's NIC that reaches the laptop.
  link_interface: stiefellink
  # Largest kernel or initrd accepted, in bytes.
  max_file_bytes: ${8 * 1024 ** 3}
  # A download that receives nothing for this many seconds fails.
  stall_timeout_s: 30
  # Words added to the kernel command line of stiefelOS on the boot stick
  # ('stiefelctl create-usbdrive'), e.g. "console=ttyS1,115200" to make a
  # second serial port the console that takes input.
  cmdline_append: ""
`;
}
