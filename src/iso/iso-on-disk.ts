// Where an ISO file lies, as the ISO's own initramfs will see it after
// kexec: the file system holding it (from /proc/self/mountinfo) and the
// path inside that file system. A live ISO's initramfs (live-boot, casper,
// archiso, dracut) mounts the disks itself and looks for that path
// (findiso=, iso-scan/filename=, img_loop=), so an ISO on a USB disk needs
// no RAM kept aside across kexec. An ISO in RAM (tmpfs), on the network or
// inside a device-mapper volume cannot be found that way. Pure.

export interface MountEntry {
  /** major:minor of the device; major 0 for file systems without one (tmpfs, overlay, nfs). */
  majorMinor: string;
  /** The directory of the file system mounted here (not / for bind mounts of a subdirectory). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Mountinfo's octal escapes (\040 for a blank) undone. */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** proc(5)'s /proc/self/mountinfo: "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER". */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 6 || fields.length < dash + 3) continue;
    out.push({ majorMinor: fields[2]!, root: unescape(fields[3]!), mountPoint: unescape(fields[4]!), fsType: fields[dash + 1]!, source: unescape(fields[dash + 2]!) });
  }
  return out;
}

/** The mount that holds `path` (absolute, normalised): the longest mount point above it, the last one when stacked. */
export function mountOf(path: string, mounts: readonly MountEntry[]): MountEntry | undefined {
  let best: MountEntry | undefined;
  for (const m of mounts) {
    const above = m.mountPoint === '/' || path === m.mountPoint || path.startsWith(`${m.mountPoint}/`);
    if (above && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best;
}

export type IsoLocation =
  | { found: true; device: string; fsType: string; path: string; /** A name for the device that stays across kernels (/dev/disk/by-uuid/...), when known. */ byId?: string }
  | { found: false; why: string };

/** Where the ISO's initramfs can find `file` again, or why it cannot. */
export function locateIsoFile(file: string, mounts: readonly MountEntry[]): IsoLocation {
  const m = mountOf(file, mounts);
  if (!m) return { found: false, why: `no file system in /proc/self/mountinfo holds ${file}` };
  if (m.majorMinor.startsWith('0:') || !m.source.startsWith('/dev/')) {
    const where = m.fsType === 'tmpfs' || m.fsType === 'ramfs' || m.fsType === 'rootfs' ? `in RAM (${m.fsType})` : `on ${m.fsType} (${m.source}), not on a disk`;
    return { found: false, why: `${file} is ${where}, where the ISO's kernel cannot see it` };
  }
  if (/^\/dev\/(mapper\/|dm-)/.test(m.source)) return { found: false, why: `${file} is on ${m.source}, a device-mapper volume (LUKS or LVM) that the ISO's initramfs does not open` };
  const inside = file === m.mountPoint ? '' : m.mountPoint === '/' ? file : file.slice(m.mountPoint.length);
  const path = `${m.root === '/' ? '' : m.root}${inside}` || '/';
  return { found: true, device: m.source, fsType: m.fsType, path };
}
