// What `setup-server-os` installs into the laptop OS, as a list of file
// changes computed from the desired state and the current one. Pure: the
// caller reads the current files and applies the changes.
import { readAsset } from '../assets';
import { StiefelError } from '../errors';
import { VERSION } from '../version';
import type { InitramfsFamily } from './family';
import { serverCmdline } from '../cmdline/stiefelos-cmdline';
import { BLS_ENTRY_NAME, blsEntry, ESP_STIEFELOS_DIR, GRUB_SNIPPET_PATH, grubSnippet, type BootMenu } from './boot-menu';

/** The shared attach script, run by every family's adapter in the initramfs. */
export const ATTACH_PATH = '/usr/lib/stiefelsystem/stiefel-attach';
/** In the booted laptop OS on the desktop: a new connection for the disk when its connection dies. */
export const RECONNECT_PATH = '/usr/lib/stiefelsystem/stiefel-nbd-reconnect';
/** What the server needs to know about this OS, in the boot partition. */
export const BOOT_RECORD_FILE = 'stiefelsystem-os.json';
export const BOOT_RECORD_PATH = `/boot/${BOOT_RECORD_FILE}`;
export const MKINITCPIO_CONF = '/etc/mkinitcpio.conf';
export const MKINITCPIO_HOOK = 'stiefelsystem';
export const KERNEL_POSTINST_PATH = '/etc/kernel/postinst.d/zz-stiefelsystem';
/** systemd-shutdown runs it last, after the file systems are read-only: the goodbye to the laptop. */
export const SHUTDOWN_HOOK_PATH = '/usr/lib/systemd/system-shutdown/stiefelsystem';
export const AUTOKEXEC_UNIT = 'stiefel-autokexec.service';
/** Where the Debian package puts the unit; without the package, setup-server-os writes it to /etc. */
export const PACKAGED_UNIT_PATH = `/lib/systemd/system/${AUTOKEXEC_UNIT}`;
export const LOCAL_UNIT_PATH = `/etc/systemd/system/${AUTOKEXEC_UNIT}`;
/** In the laptop OS on the desktop: the laptop's battery and silence, told to the desktop's users. */
export const WATCH_UNIT = 'stiefel-laptop-watch.service';
export const RECONNECT_UNIT = 'stiefel-nbd-reconnect.service';
/** The units setup-server-os installs and enables, with their assets. */
export const UNITS: readonly { name: string; asset: string }[] = [
  { name: AUTOKEXEC_UNIT, asset: `laptop/${AUTOKEXEC_UNIT}` },
  { name: WATCH_UNIT, asset: `laptop/${WATCH_UNIT}` },
  { name: RECONNECT_UNIT, asset: `laptop/${RECONNECT_UNIT}` },
];
export const packagedUnitPath = (unit: string): string => `/lib/systemd/system/${unit}`;
export const localUnitPath = (unit: string): string => `/etc/systemd/system/${unit}`;

export interface BootRecord {
  family: InitramfsFamily;
  /** The laptop OS's own kernel command line (root=..., without stiefel parameters). */
  cmdline: string;
}

export interface DesiredFile {
  path: string;
  /** null: the file must not exist. */
  content: string | null;
  mode: number;
}

export interface CurrentFile {
  content: string | null;
  mode: number | null;
}

export interface FileChange {
  path: string;
  before: string | null;
  after: string | null;
  modeBefore: number | null;
  mode: number;
}

export interface SystemFacts {
  /** NetworkManager is installed. */
  networkManager: boolean;
  /** systemd-networkd is installed. */
  networkd: boolean;
  /** Current /etc/mkinitcpio.conf (mkinitcpio family), or null. */
  mkinitcpioConf: string | null;
  /** The boot loader whose menu gets the stiefelsystem entry. */
  bootMenu: BootMenu;
  /** The Debian package installed the autokexec unit. */
  packagedUnit: boolean;
  /** Paths the stiefelsystem package owns (its dpkg file list); setup-server-os never writes or removes them. */
  packaged?: ReadonlySet<string>;
}

/**
 * Where the package ships what setup-server-os would otherwise write to /etc:
 * initramfs-tools reads hooks and scripts from /usr/share as from /etc, and a
 * copy in /etc would run twice (or, stale after an upgrade, hide the package's).
 */
export const PACKAGED_EQUIVALENTS: Readonly<Record<string, string>> = {
  '/etc/initramfs-tools/hooks/stiefelsystem': '/usr/share/initramfs-tools/hooks/stiefelsystem',
  '/etc/initramfs-tools/scripts/local-top/stiefelsystem': '/usr/share/initramfs-tools/scripts/local-top/stiefelsystem',
};

const EXEC = 0o755;
const TEXT = 0o644;

/** Every file this tool ever installs, by family ('common' for all). */
function ownedFiles(): Record<InitramfsFamily | 'common' | 'nm' | 'networkd', Array<{ path: string; asset: string; mode: number }>> {
  return {
    common: [
      { path: ATTACH_PATH, asset: 'server-os/stiefel-attach.sh', mode: EXEC },
      { path: RECONNECT_PATH, asset: 'server-os/stiefel-nbd-reconnect', mode: EXEC },
      { path: KERNEL_POSTINST_PATH, asset: 'server-os/kernel-postinst', mode: EXEC },
      { path: SHUTDOWN_HOOK_PATH, asset: 'server-os/system-shutdown', mode: EXEC },
    ],
    'initramfs-tools': [
      { path: '/etc/initramfs-tools/hooks/stiefelsystem', asset: 'server-os/initramfs-tools/hook', mode: EXEC },
      { path: '/etc/initramfs-tools/scripts/local-top/stiefelsystem', asset: 'server-os/initramfs-tools/local-top', mode: EXEC },
    ],
    dracut: [
      { path: '/usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh', asset: 'server-os/dracut/module-setup.sh', mode: EXEC },
      { path: '/usr/lib/dracut/modules.d/90stiefelsystem/stiefel-cmdline.sh', asset: 'server-os/dracut/stiefel-cmdline.sh', mode: EXEC },
      { path: '/etc/dracut.conf.d/stiefelsystem.conf', asset: 'server-os/dracut/dracut.conf', mode: TEXT },
    ],
    mkinitcpio: [
      { path: '/etc/initcpio/install/stiefelsystem', asset: 'server-os/mkinitcpio/install', mode: TEXT },
      { path: '/etc/initcpio/hooks/stiefelsystem', asset: 'server-os/mkinitcpio/hook', mode: TEXT },
    ],
    nm: [{ path: '/etc/NetworkManager/conf.d/stiefelsystem.conf', asset: 'server-os/NetworkManager.conf', mode: TEXT }],
    networkd: [{ path: '/etc/systemd/network/00-stiefelsystem.network', asset: 'server-os/networkd.network', mode: TEXT }],
  };
}

export function encodeBootRecord(record: BootRecord): string {
  return `${JSON.stringify({ family: record.family, cmdline: record.cmdline, installedBy: `stiefelctl ${VERSION}` }, null, 2)}\n`;
}

const HOOKS_LINE = /^(\s*HOOKS=\()([^)]*)(\).*)$/m;

/** /etc/mkinitcpio.conf with our hook inserted before `filesystems` (idempotent). */
export function addMkinitcpioHook(conf: string): string {
  const m = HOOKS_LINE.exec(conf);
  if (!m) throw new StiefelError('E_MKINITCPIO_CONF', `${MKINITCPIO_CONF} has no HOOKS=(...) line; add '${MKINITCPIO_HOOK}' before 'filesystems' by hand`);
  const hooks = m[2]!.split(/\s+/).filter(Boolean);
  if (hooks.includes(MKINITCPIO_HOOK)) return conf;
  if (hooks.includes('systemd')) {
    throw new StiefelError(
      'E_MKINITCPIO_SYSTEMD',
      `${MKINITCPIO_CONF} builds a systemd-based initramfs (HOOKS has 'systemd'), which runs no shell hooks; use the 'udev' hook instead of 'systemd' for stiefelsystem`,
    );
  }
  const at = hooks.indexOf('filesystems');
  if (at < 0) throw new StiefelError('E_MKINITCPIO_CONF', `${MKINITCPIO_CONF} HOOKS has no 'filesystems'; add '${MKINITCPIO_HOOK}' before the hook that mounts the root file system`);
  hooks.splice(at, 0, MKINITCPIO_HOOK);
  return conf.replace(HOOKS_LINE, `$1${hooks.join(' ')}$3`);
}

export function removeMkinitcpioHook(conf: string): string {
  const m = HOOKS_LINE.exec(conf);
  if (!m) return conf;
  const hooks = m[2]!.split(/\s+/).filter(Boolean);
  if (!hooks.includes(MKINITCPIO_HOOK)) return conf;
  return conf.replace(HOOKS_LINE, `$1${hooks.filter((h) => h !== MKINITCPIO_HOOK).join(' ')}$3`);
}

/**
 * The state the laptop OS should be in: `record` given installs for its
 * family (and removes what another family's install left); null uninstalls.
 */
export function desiredFiles(record: BootRecord | null, facts: SystemFacts): DesiredFile[] {
  const owned = ownedFiles();
  const wanted = new Set<string>();
  if (record) {
    wanted.add('common');
    wanted.add(record.family);
    if (facts.networkManager) wanted.add('nm');
    if (facts.networkd) wanted.add('networkd');
  }
  const out: DesiredFile[] = [];
  for (const [group, files] of Object.entries(owned)) {
    for (const f of files) out.push({ path: f.path, content: wanted.has(group) ? readAsset(f.asset) : null, mode: f.mode });
  }
  out.push({ path: BOOT_RECORD_PATH, content: record ? encodeBootRecord(record) : null, mode: TEXT });
  // The boot-menu entry, for whichever boot loader there is (and none left for another).
  const cmdline = record ? serverCmdline(record.cmdline, '') : '';
  const menu = facts.bootMenu;
  out.push({ path: GRUB_SNIPPET_PATH, content: record && menu.kind === 'grub' ? grubSnippet(cmdline) : null, mode: EXEC });
  if (menu.kind === 'systemd-boot') {
    const espDir = menu.esp === '/boot' ? '/stiefelsystem' : ESP_STIEFELOS_DIR;
    out.push({ path: `${menu.esp}/loader/entries/${BLS_ENTRY_NAME}`, content: record ? blsEntry(cmdline, espDir) : null, mode: TEXT });
  }
  for (const u of UNITS) out.push({ path: localUnitPath(u.name), content: record && !facts.packagedUnit ? readAsset(u.asset) : null, mode: TEXT });
  if (facts.mkinitcpioConf !== null) {
    const conf = record?.family === 'mkinitcpio' ? addMkinitcpioHook(facts.mkinitcpioConf) : removeMkinitcpioHook(facts.mkinitcpioConf);
    out.push({ path: MKINITCPIO_CONF, content: conf, mode: TEXT });
  }
  // What the package installed is the package's: left alone here, and an
  // /etc copy of something it ships in /usr goes.
  const packaged = facts.packaged ?? new Set<string>();
  return out
    .filter((d) => !packaged.has(d.path))
    .map((d) => {
      const equivalent = PACKAGED_EQUIVALENTS[d.path];
      return equivalent !== undefined && packaged.has(equivalent) ? { ...d, content: null } : d;
    });
}

/** The changes that turn `current` into `desired`; nothing when they agree. */
export function planChanges(desired: readonly DesiredFile[], current: ReadonlyMap<string, CurrentFile>): FileChange[] {
  const changes: FileChange[] = [];
  for (const d of desired) {
    const c = current.get(d.path) ?? { content: null, mode: null };
    const sameContent = c.content === d.content;
    const sameMode = d.content === null || c.mode === d.mode;
    if (sameContent && sameMode) continue;
    changes.push({ path: d.path, before: c.content, after: d.content, modeBefore: c.mode, mode: d.mode });
  }
  return changes;
}

/** Parameters the desktop adds for the laptop OS; never part of the recorded command line. */
const ADDED_BY_STIEFELSYSTEM = /^(stiefel\.[^=]*|nbdroot|nbddev|netroot|nbd_host|nbd_name|nbd_port|rd\.neednet|BOOT_IMAGE|initrd)(=|$)/;

/** The laptop OS's command line, cleaned of what the bootloader or stiefelsystem add. */
export function cleanCmdline(cmdline: string): string {
  return cmdline
    .trim()
    .split(/\s+/)
    .filter((w) => w && !ADDED_BY_STIEFELSYSTEM.test(w))
    .join(' ');
}

/** `root=` from an fstab's line for `/`, or null. */
export function rootFromFstab(fstab: string): string | null {
  for (const line of fstab.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields.length >= 2 && !fields[0]!.startsWith('#') && fields[1] === '/') return `root=${fields[0]}`;
  }
  return null;
}

/** GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT from /etc/default/grub, joined. */
export function grubDefaultCmdline(text: string): string | null {
  const parts: string[] = [];
  for (const key of ['GRUB_CMDLINE_LINUX', 'GRUB_CMDLINE_LINUX_DEFAULT']) {
    const m = new RegExp(`^\\s*${key}=(?:"([^"]*)"|'([^']*)'|(\\S*))`, 'm').exec(text);
    if (m) parts.push(m[1] ?? m[2] ?? m[3] ?? '');
  }
  return parts.length ? parts.join(' ').trim() : null;
}
