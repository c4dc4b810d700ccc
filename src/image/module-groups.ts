// The kernel modules stiefelOS carries, by purpose. A group names module
// directories (every module below them) and module names or exact aliases.
// Names that this kernel does not have are skipped (many are built in on
// one distribution and modules on another), except the `required` ones.

export interface ModuleGroup {
  name: string;
  /** Directories relative to the modules directory; every module below them. */
  dirs?: string[];
  /** Module names or exact aliases; skipped when the kernel has neither. */
  names?: string[];
  /** Names the image cannot do without: the build fails when one is missing. */
  required?: string[];
}

export const MODULE_GROUPS: readonly ModuleGroup[] = [
  {
    name: 'ethernet',
    // Every Ethernet driver, the PHY and MDIO drivers they bind through, and
    // Thunderbolt/USB4 networking (a cable between two laptops).
    dirs: ['kernel/drivers/net/ethernet/', 'kernel/drivers/net/phy/', 'kernel/drivers/net/mdio/', 'kernel/drivers/net/pcs/'],
    names: ['thunderbolt', 'thunderbolt_net'],
  },
  {
    name: 'usb-net',
    dirs: ['kernel/drivers/net/usb/'],
    names: ['xhci_pci', 'xhci_plat_hcd', 'ehci_pci', 'ehci_platform', 'ohci_pci', 'uhci_hcd', 'typec_ucsi', 'ucsi_acpi'],
  },
  {
    name: 'virtio',
    names: [
      'virtio_pci',
      'virtio_mmio',
      'virtio_net',
      'virtio_blk',
      'virtio_scsi',
      'virtio_console',
      'virtio_rng',
      'virtio_input',
      'virtio_balloon',
    ],
  },
  { name: 'network', names: ['af_packet', 'ipv6'], required: ['nbd', 'wireguard'] },
  {
    name: 'storage',
    // The server serves its own disk: NVMe (also behind Intel VMD), SATA,
    // USB storage, SD/MMC and the virtual ones.
    names: ['nvme', 'vmd', 'ahci', 'ata_piix', 'sd_mod', 'sr_mod', 'usb_storage', 'uas', 'sdhci_pci', 'sdhci_acpi', 'mmc_block', 'loop'],
  },
  {
    name: 'filesystems',
    names: ['vfat', 'msdos', 'nls_cp437', 'nls_iso8859_1', 'nls_utf8', 'nls_ascii', 'ext4', 'xfs', 'btrfs', 'efivarfs'],
  },
  {
    name: 'iso',
    // Booting a distribution's ISO: ISO files on USB disks and CDs, the live
    // system inside one (its kernel's pmem modules come from there), and the
    // RAM set aside across kexec for a downloaded live ISO (memmap=, as
    // /dev/pmem0 through nd_e820 and nd_pmem).
    names: ['isofs', 'squashfs', 'nd_e820', 'nd_pmem'],
  },
  {
    name: 'device-mapper',
    // LVM's linear and striped volumes are in dm_mod; snapshots and thin pools
    // are common enough to carry. RAID volumes would pull in the whole md stack.
    names: ['dm_mod', 'dm_crypt', 'dm_snapshot', 'dm_thin_pool'],
  },
  {
    name: 'ciphers',
    // What LUKS volumes use (aes-xts-plain64 by default, older aes-cbc-essiv),
    // the accelerated implementations, and the AF_ALG interface cryptsetup uses.
    names: [
      'aes',
      'aesni_intel',
      'xts',
      'cbc',
      'ecb',
      'essiv',
      'ctr',
      'gcm',
      'sha256',
      'sha512',
      'sha256_ssse3',
      'sha512_ssse3',
      'serpent',
      'twofish',
      'crc32c',
      'blake2b-256',
      'xxhash64',
      'af_alg',
      'algif_skcipher',
      'algif_hash',
      'algif_aead',
    ],
  },
  {
    name: 'console',
    // Keyboards (USB, I2C and the built-in PS/2 one) and the console on the
    // firmware's framebuffer. GPU drivers (i915, amdgpu: megabytes each, with
    // firmware) are left out: efifb/vesafb and fbcon drive the console, and
    // they are built into distribution kernels (Debian: CONFIG_FB_EFI=y).
    names: ['hid_generic', 'usbhid', 'hid_apple', 'i2c_hid_acpi', 'evdev', 'atkbd', 'i8042'],
  },
  {
    name: 'power',
    // The laptop's adapter and battery in /sys/class/power_supply (ACPI; modules
    // in Debian's kernel), and the PC speaker for the battery warnings' beep.
    names: ['ac', 'battery', 'pcspkr'],
  },
];
