// Every setting of stiefelsystem's config file, declared once: key, type,
// default, check, message and documentation (see declare.ts for what is made
// of it). The same file serves the laptop and the desktop.
import { isAbsolute, resolve } from 'node:path';
import {
  bool,
  custom,
  fail,
  int,
  list,
  oneOf,
  optionalSection,
  optionalText,
  path,
  requiredPath,
  section,
  text,
  yamlScalar,
} from './declare';

export const INITRAMFS_FAMILIES = ['initramfs-tools', 'dracut', 'mkinitcpio'] as const;
export type InitramfsFamily = (typeof INITRAMFS_FAMILIES)[number];

/** How the laptop OS's initramfs attaches the disk. */
export const ATTACH_MODES = ['stiefelsystem', 'family'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

export const DEFAULT_DISCOVERY_PORT = 61570;
export const DEFAULT_PAYLOAD_PORT = 4644;
export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_PXE_HTTP_PORT = 4680;
/** client.isos: a URL, and its SHA-256 after a space (required for http:). */
export const ISO_ITEM = /^(https:\/\/[^\s]+(\s+(sha256:[0-9a-fA-F]{64}|sums:(https?:\/\/)?[^\s]+))?|http:\/\/[^\s]+\s+(sha256:[0-9a-fA-F]{64}|sums:(https?:\/\/)?[^\s]+))$/;
export const DEFAULT_WIREGUARD_PORT = 51820;
export const DEFAULT_GOODBYE_PORT = 4645;

/** Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace. */
export const IFNAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;
const IFNAME_OR_GLOB = /^[A-Za-z0-9_.-]{1,15}\*?$/;
const IFNAME_ALLOWED = 'an interface name (1 to 15 letters, digits, _ . -)';
const EXPORT_NAME = /^[A-Za-z0-9_.:+-]{1,64}$/;
/** Anything but quotes, backslashes and control characters: it goes onto a kernel command line. */
const CMDLINE_TEXT = /^[^"'\\\x00-\x1f\x7f]*$/;
const oneLine = (v: string): string => v.trim().replace(/\s+/g, ' ');

function port(doc: string, def: number) {
  return int({ doc, default: def, min: 1, max: 65535 });
}

function cmdlineWords(doc: string, example?: string) {
  return optionalText({ doc, pattern: CMDLINE_TEXT, allowed: 'kernel command line words, without quotes or backslashes', normalize: oneLine, example });
}

/** `all`, or a non-empty list of interface names. */
const interfaces = custom<'all' | readonly string[]>({
  doc: 'Interfaces to bring up and use: all (every interface but lo), or a list.',
  allowed: "'all' or a non-empty list of interface names",
  default: 'all',
  check(v, at) {
    if (v === 'all') return 'all';
    const allowed = "'all' or a non-empty list of interface names";
    if (!Array.isArray(v) || v.length === 0) fail(at, allowed, v);
    return v.map((x, i) => (typeof x === 'string' && IFNAME_PATTERN.test(x) ? x : fail({ ...at, key: `${at.key}[${i}]` }, IFNAME_ALLOWED, x)));
  },
  schema: { oneOf: [{ const: 'all' }, { type: 'array', minItems: 1, items: { type: 'string', pattern: IFNAME_PATTERN.source } }] },
});

export const SETTINGS = section({
  secret: path({
    doc: "The shared secret: 32 random bytes, mode 0600. The laptop and the desktop\n(its stiefelOS image) must hold the same file. Never share it otherwise.",
    default: 'secret',
  }),
  network: section({
    interfaces,
    exclude: list({
      doc: "Interfaces never touched: names, or prefixes ending in '*' (e.g. 'wl*').",
      default: [],
      item: { pattern: IFNAME_OR_GLOB, allowed: "an interface name, or a prefix ending in '*'" },
    }),
    watch_interval_ms: int({ doc: 'How often new interfaces (a USB adapter plugged in later) are looked for.', default: 250, min: 20, max: 60_000 }),
  }),
  discovery: section({
    port: port('UDP port; requests go to ff02::1 (IPv6 link-local multicast) on every\ninterface, and to the IPv4 broadcast address where there is one.', DEFAULT_DISCOVERY_PORT),
    retry_interval_ms: int({ doc: 'The client repeats its request this often, on every interface at once.', default: 50, min: 5, max: 10_000 }),
    timeout_s: int({ doc: 'The client gives up after this many seconds; 0 keeps trying forever.', default: 0, min: 0, max: 86_400 }),
    max_clock_skew_s: int({ doc: "Requests whose clock differs more than this from the laptop's are ignored.", default: 600, min: 1, max: 7 * 86_400 }),
    ipv4_broadcast: bool({ doc: 'Also ask on IPv4 broadcast, on interfaces that have an IPv4 address.', default: true }),
  }),
  link: section({
    mtu: int({
      doc: "The MTU of the cable, on both ends: the laptop sets it on its interfaces and\nhands it to the desktop, whose laptop OS sets it on the link it boots over;\nthe WireGuard tunnel's is 80 less. 9000 (jumbo frames) where both NICs take\nit; a NIC that does not stays at its own and TCP keeps to the smaller.",
      default: 1500,
      min: 1280,
      max: 9000,
    }),
  }),
  payload: section({
    port: port('HTTPS port (TLS 1.2, ECDHE-PSK with a key derived from the secret).', DEFAULT_PAYLOAD_PORT),
  }),
  server: section(
    {
      disk: custom<string | undefined>({
        doc: "The disk the laptop OS lives on, served over NBD to one client at a time:\na path (/dev/nvme0n1, an image file), or PTUUID=ID, the id of its\npartition table (lsblk -o PTUUID), which no re-ordering of disks changes.\nWhat the desktop boots is found on it the way the laptop's boot loader\nfinds it (see 'stiefelctl boot-entries'), with the initramfs family and\ncommand line that 'stiefelctl setup-server-os' recorded there.",
        allowed: 'a disk: a path, or PTUUID= and the id of its partition table',
        default: undefined,
        example: '/dev/nvme0n1',
        check(v, at) {
          if (typeof v !== 'string' || !/^[^\0]+$/.test(v)) fail(at, 'a disk: a path, or PTUUID= and the id of its partition table', v);
          if (/^PTUUID=/i.test(v)) return /^PTUUID=[0-9A-Fa-f-]{8,36}$/.test(v) ? `PTUUID=${v.slice(7).toLowerCase()}` : fail(at, 'PTUUID= and a partition-table id (8 hex digits for MBR, a GUID for GPT)', v);
          return isAbsolute(v) ? v : resolve(at.base, v);
        },
        schema: { type: 'string', minLength: 1 },
      }),
      boot: optionalSection(
        {
          kernel: requiredPath({ doc: 'The laptop OS kernel.', example: '/boot/vmlinuz', missing: 'the path of the laptop OS kernel' }),
          initrd: requiredPath({ doc: 'Its initrd.', example: '/boot/initrd.img', missing: 'the path of the laptop OS initrd' }),
          cmdline: text({
            doc: 'Its kernel command line.',
            default: '',
            pattern: CMDLINE_TEXT,
            allowed: 'the kernel command line, without quotes or backslashes',
            normalize: oneLine,
            example: '"root=UUID=... ro quiet"',
          }),
          family: oneOf(INITRAMFS_FAMILIES, { doc: 'How its initramfs finds the disk.', default: 'initramfs-tools' }),
        },
        { doc: `Or name the laptop OS's kernel, initrd and command line yourself; family\nis how its initramfs finds the disk: ${INITRAMFS_FAMILIES.join(', ')}.` },
      ),
      family: oneOf(INITRAMFS_FAMILIES, { doc: "The laptop OS's initramfs family, when the disk has no record of it\n(setup-server-os writes one).", default: undefined, example: 'initramfs-tools' }),
      cmdline: cmdlineWords('Likewise, the command line for kernels found without one.', '"root=UUID=... ro quiet"'),
      cmdline_append: text({
        doc: "Words added to the laptop OS's command line when it boots on the desktop.",
        default: '',
        pattern: CMDLINE_TEXT,
        allowed: 'kernel command line words, without quotes or backslashes',
        normalize: oneLine,
      }),
      attach: oneOf(ATTACH_MODES, {
        doc: "stiefelsystem: the laptop OS has stiefelsystem's hooks (setup-server-os);\nfamily: use the initramfs family's own NBD support (needs wireguard off).",
        default: 'stiefelsystem',
      }),
      wireguard: section(
        {
          enabled: bool({ doc: 'Serve the disk only through the tunnel.', default: true }),
          port: port("UDP port of the laptop's end of the tunnel.", DEFAULT_WIREGUARD_PORT),
        },
        { doc: 'The disk is served only through a WireGuard tunnel whose keys are made\nanew for every boot. Turn it off only on a trusted point-to-point cable.' },
      ),
      nbd: section({
        port: port('TCP port of the NBD server.', DEFAULT_NBD_PORT),
        export: text({ doc: 'The export name.', default: 'disk', pattern: EXPORT_NAME, allowed: 'an export name (1 to 64 letters, digits, _ . : + -)' }),
        connections: int({
          doc: "TCP connections the desktop's kernel opens to the disk (nbd-client -C):\nits block layer spreads requests over them by CPU. More than one helps\nonly where the desktop has that many CPUs (see BENCHMARKS.md).",
          default: 1,
          min: 1,
          max: 8,
        }),
      }),
      handoff_timeout_s: int({
        doc: 'After a desktop fetched the payload, the laptop waits this long for its\ndisk connection before serving another desktop.',
        default: 300,
        min: 1,
        max: 86_400,
      }),
      when_done: oneOf(['return', 'stay', 'poweroff'], {
        doc: "When the desktop is done with the disk (it said goodbye as it shut down\nand the root file system is clean): return to the laptop's own OS, stay\nin stiefelOS, or power off. After a countdown that any key cancels.",
        default: 'return',
      }),
      return_delay_s: int({ doc: 'That countdown, in seconds.', default: 10, min: 0, max: 3600 }),
      battery: section(
        {
          warn_every_s: int({ doc: 'On battery: a console warning and a beep this often, in seconds.', default: 60, min: 1, max: 3600 }),
          low_percent: int({ doc: 'Below this charge, in percent...', default: 20, min: 0, max: 100 }),
          low_every_s: int({ doc: '...the warning comes this often instead.', default: 10, min: 1, max: 3600 }),
          power_supply: path({ doc: "Where the kernel shows the laptop's power supplies.", default: '/sys/class/power_supply' }),
        },
        { doc: "A laptop serving its disk must not run flat: stiefelOS warns on its\nconsole (and beeps) while the laptop runs on battery." },
      ),
      pxe: section(
        {
          enabled: bool({
            doc: "Boot services on every link: DHCP for PXE clients only (ProxyDHCP when\nanother DHCP server answers there), TFTP for iPXE, HTTP for stiefelOS.",
            default: true,
          }),
          image: path({
            doc: "The stiefelOS served to PXE clients (vmlinuz, initrd.img): one that\ncarries no secret; it pairs with the code on this console instead.",
            default: '/usr/lib/stiefelsystem/pxe',
          }),
          ipxe_dir: path({ doc: "Debian's iPXE boot files (undionly.kpxe for BIOS, ipxe.efi for UEFI).", default: '/usr/lib/ipxe' }),
          http_port: port('TCP port of the HTTP server for iPXE (its script, the kernel, the initrd)\nand of the pairing exchange.', DEFAULT_PXE_HTTP_PORT),
          subnet: text({
            doc: "Where the laptop hands out addresses on a link with no DHCP server:\nlink N gets A.B.N.1/24 and leases A.B.N.2 to A.B.N.9.",
            default: '10.185.0.0/16',
            pattern: /^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.0\.0\/16$/,
            allowed: 'an IPv4 /16 (A.B.0.0/16)',
          }),
          code_valid_s: int({ doc: 'A pairing code shown on this console is valid this long (and for 3 tries).', default: 300, min: 30, max: 3600 }),
        },
        { doc: 'A desktop with no stick can PXE-boot from the laptop; it proves itself\nwith the pairing code shown on this console.' },
      ),
      console_panel: oneOf(['auto', 'on', 'off'], {
        doc: "The status panel at the top of the laptop's console, redrawn once a second\nwhile it serves (what 'stiefelctl status' shows): auto draws it on a virtual\nterminal (tty1...), not on a serial console; on draws it on any terminal.",
        default: 'auto',
      }),
      goodbye_port: port("TCP port where the laptop OS on the desktop says goodbye as its last\nshutdown step (on the tunnel address; the word is a per-boot token).", DEFAULT_GOODBYE_PORT),
      name: optionalText({
        doc: 'Name shown on the desktop; defaults to the host name.',
        pattern: /^[A-Za-z0-9_.-]{1,64}$/,
        allowed: 'a name (1 to 64 letters, digits, _ . -)',
        example: 'my-laptop',
      }),
    },
    {
      check(server, at) {
        if (server.attach === 'family' && server.wireguard.enabled) {
          fail({ ...at, key: `${at.key}.attach` }, "'stiefelsystem' while server.wireguard.enabled is true (the family's own NBD support cannot set up the tunnel)", server.attach);
        }
      },
    },
  ),
  autokexec: section({
    trigger: oneOf(['discovery', 'link', 'both'], {
      doc: "What makes the laptop's own OS reboot into stiefelOS as the server\n(the stiefel-autokexec service): a desktop's authenticated discovery on\nany interface, carrier on the interface with link_mac, or both.",
      default: 'discovery',
    }),
    link_mac: optionalText({
      doc: 'The MAC address of the interface whose carrier triggers (trigger: link or both).',
      pattern: /^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/,
      allowed: 'a MAC address (aa:bb:cc:dd:ee:ff)',
      example: 'aa:bb:cc:dd:ee:ff',
    }),
    delay_s: int({ doc: "Seconds between the trigger and the reboot, for 'stiefelctl autokexec --cancel'.", default: 10, min: 0, max: 3600 }),
    holdoff_s: int({ doc: 'After a cancel, triggers are ignored this long.', default: 600, min: 0, max: 86_400 }),
    image: path({ doc: "stiefelOS for this laptop (vmlinuz, initrd.img), built by setup-server-os.", default: '/boot/stiefelsystem' }),
    cmdline_append: text({
      doc: "Words added to stiefelOS's command line (console= is taken from the running kernel's).",
      default: '',
      pattern: CMDLINE_TEXT,
      allowed: 'kernel command line words, without quotes or backslashes',
      normalize: oneLine,
    }),
  }),
  client: section({
    link_interface: text({
      doc: "Name the laptop OS's initramfs gives the desktop's NIC that reaches the laptop.",
      default: 'stiefellink',
      pattern: IFNAME_PATTERN,
      allowed: IFNAME_ALLOWED,
    }),
    max_file_bytes: int({ doc: 'Largest kernel or initrd accepted, in bytes.', default: 8 * 1024 ** 3, min: 1, max: Number.MAX_SAFE_INTEGER }),
    stall_timeout_s: int({ doc: 'A download that receives nothing for this many seconds fails.', default: 30, min: 1, max: 3600 }),
    cmdline_append: text({
      doc: "Words added to the kernel command line of stiefelOS on the boot stick\n('stiefelctl create-usbdrive'), e.g. \"console=ttyS1,115200\" to make a\nsecond serial port the console that takes input.",
      default: '',
      pattern: CMDLINE_TEXT,
      allowed: 'kernel command line words, without quotes or backslashes',
      normalize: oneLine,
    }),
    menu_after_s: int({
      doc: "When no laptop answers this long, the stick's stiefelOS shows a menu on\nits console: keep looking, boot an ISO (from isos, a typed URL or a USB\ndisk), or a rescue shell (a key opens it sooner). Long enough for a laptop\nthat reboots into stiefelOS on the desktop's request. 0: never.",
      default: 180,
      min: 0,
      max: 86_400,
    }),
    isos: list({
      doc: "ISOs the menu offers: 'URL' (https), 'URL sha256:HEX' or 'URL sums:SUMS' (the\ndistribution's signed SHA256SUMS or CHECKSUM, a URL or a file, checked with gpgv\nagainst /etc/stiefelsystem/iso-keyring.gpg); http: needs one of the two.\nChecked before anything boots.",
      default: [],
      item: { pattern: ISO_ITEM, allowed: "'https://… .iso', 'URL sha256:<64 hex digits>' or 'URL sums:<URL of SHA256SUMS>'" },
    }),
  }),
});

/** For a template line written by hand (the secret's path). */
export const templateScalar = yamlScalar;
