// The stick's boot menu, written once for each boot loader: syslinux (BIOS
// PCs) and systemd-boot (UEFI). Both read the same kernel and initrd from the
// ESP. Pure: text in, text out.
//
// Consoles: the kernel prints to every console= given, and the last one is
// /dev/console, where stiefelOS's /init reads input; the screen comes last so
// a person at the desktop types there, and /init copies its output to the
// others (the serial port). syslinux draws its menu on the screen and, with
// SERIAL, on the first serial port; systemd-boot draws on what the firmware
// calls the console (the screen, and on OVMF the serial port too).

import { DESKTOP_CONSOLES } from '../cmdline/stiefelos-cmdline';

/** Where things live on the ESP. */
export const ESP_PATHS = {
  kernel: '/stiefelos/vmlinuz',
  initrd: '/stiefelos/initrd.img',
  /** The UEFI removable-media path for x86_64 (UEFI spec 2.10, 3.5.1.1): no NVRAM entry needed. */
  efiBoot: '/EFI/BOOT/BOOTX64.EFI',
  loaderConf: '/loader/loader.conf',
  loaderEntries: '/loader/entries',
  syslinuxDir: '/syslinux',
  syslinuxCfg: '/syslinux/syslinux.cfg',
  readme: '/STIEFEL.TXT',
} as const;

export const ESP_LABEL = 'STIEFEL';
export const MENU_TIMEOUT_S = 3;
/** The screen last: it becomes /dev/console. */
export const STICK_CONSOLES = DESKTOP_CONSOLES;
export const SERIAL_BAUD = 115200;

export type MenuEntryId = 'client' | 'debug' | 'rescue';

export interface MenuEntry {
  id: MenuEntryId;
  title: string;
  cmdline: string;
}

export interface MenuOptions {
  /** client.cmdline_append: words added to every entry's command line, last (so they can override). */
  cmdlineAppend: string;
}

function join(...words: string[]): string {
  return words
    .join(' ')
    .split(/\s+/)
    .filter(Boolean)
    .join(' ');
}

/** The three entries, the default first. */
export function stickMenu(o: MenuOptions): MenuEntry[] {
  return [
    { id: 'client', title: "stiefelsystem: find the laptop and boot its OS", cmdline: join(STICK_CONSOLES, 'stiefel.role=client', o.cmdlineAppend) },
    // `debug`: every kernel message on the console; STIEFEL_DEBUG (no dot, so
    // the kernel hands it to /init as an environment variable): stiefelctl's
    // debug lines of every subsystem.
    { id: 'debug', title: 'stiefelsystem: the same, with debug messages', cmdline: join(STICK_CONSOLES, 'stiefel.role=client debug STIEFEL_DEBUG=*', o.cmdlineAppend) },
    { id: 'rescue', title: 'stiefelOS: rescue shell', cmdline: join(STICK_CONSOLES, 'stiefel.role=rescue', o.cmdlineAppend) },
  ];
}

/** One word of a syslinux or loader.conf line: no line breaks may get in. */
function line(text: string): string {
  if (/[\r\n]/.test(text)) throw new Error(`a boot menu line cannot hold a line break: ${JSON.stringify(text)}`);
  return text;
}

export function syslinuxConfig(entries: readonly MenuEntry[], timeoutS = MENU_TIMEOUT_S): string {
  const out = [
    // SERIAL has to be the first directive.
    `SERIAL 0 ${SERIAL_BAUD}`,
    '# Written by stiefelctl create-usbdrive; run it again rather than editing this.',
    'UI menu.c32',
    'MENU TITLE stiefelsystem',
    'PROMPT 0',
    `TIMEOUT ${timeoutS * 10}`,
    `DEFAULT ${entries[0]!.id}`,
  ];
  for (const e of entries) {
    out.push('', `LABEL ${e.id}`, `  MENU LABEL ${line(e.title)}`, `  LINUX ${ESP_PATHS.kernel}`, `  INITRD ${ESP_PATHS.initrd}`, `  APPEND ${line(e.cmdline)}`);
  }
  return `${out.join('\n')}\n`;
}

/** systemd-boot entry file names: sorted by sort-key, so the menu keeps this order. */
export function loaderEntryFileName(e: MenuEntry, index: number): string {
  return `stiefel-${index + 1}-${e.id}.conf`;
}

export function loaderConf(entries: readonly MenuEntry[], timeoutS = MENU_TIMEOUT_S): string {
  return [
    '# Written by stiefelctl create-usbdrive; run it again rather than editing this.',
    `timeout ${timeoutS}`,
    `default ${loaderEntryFileName(entries[0]!, 0)}`,
    'editor yes',
    'console-mode keep',
    '',
  ].join('\n');
}

export function loaderEntry(e: MenuEntry, index: number): string {
  return [
    `title ${line(e.title)}`,
    `sort-key stiefel-${index + 1}`,
    `linux ${ESP_PATHS.kernel}`,
    `initrd ${ESP_PATHS.initrd}`,
    `options ${line(e.cmdline)}`,
    '',
  ].join('\n');
}

/** A note for whoever finds the stick and looks at its files. */
export function stickReadme(): string {
  return [
    'stiefelsystem boot stick',
    '',
    "This stick starts a desktop PC (UEFI or BIOS) into stiefelOS, which finds",
    "the laptop on the network cable and boots the laptop's own operating",
    'system on this PC.',
    '',
    "It holds the key to the laptop's disk (inside stiefelos/initrd.img): keep",
    'it as you would keep that key. Remake it with',
    '  stiefelctl create-usbdrive /dev/sdX',
    '',
  ].join('\r\n');
}
