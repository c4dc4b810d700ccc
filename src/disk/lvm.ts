// Activating the volume group on a physical volume long enough to read /boot
// from one of its logical volumes, then deactivating it. Every command sees
// only our device (--devices, LVM 2.03.12+) so no other disk's volumes are
// touched, and runs with metadata writes disabled:
//   pvs    --devices DEV --config CFG --reportformat json -o pv_name,vg_name
//   lvs    --devices DEV --config CFG --reportformat json -o lv_name,vg_name,lv_path,lv_size,lv_active --units b --nosuffix
//   vgchange --devices DEV --config CFG --activate y VG
//   ... read /dev/VG/LV ...
//   vgchange --devices DEV --config CFG --activate n VG             (always)
// CFG = global/metadata_read_only=1, activation/read_only_volume_list=["*"]...
// so activation never writes to the disk.
//
// A volume group that is already active (stiefelctl run on the laptop's
// running OS: its root and /boot live in it) is used as it is and never
// deactivated: LVM finds active volumes by UUID, so `vgchange -an` through our
// loop device would pull the running system's volumes away.
// Verified with the real lvm 2.03.16 inside a VM without udev
// (test/vm/boot-entries-luks-lvm.test.ts): udev_sync/udev_rules off make LVM
// create /dev/VG/LV itself.
import { StiefelError } from '../errors';
import type { CleanupStack } from './cleanup';
import { runChecked, type CommandRunner } from './runner';

/** lvm.conf settings that keep every command from writing to the disk. */
export const LVM_READ_ONLY_CONFIG = 'global { metadata_read_only = 1 } activation { read_only_volume_list = [ "@*", "*" ] udev_sync = 0 udev_rules = 0 monitoring = 0 } backup { backup = 0 archive = 0 }';

export interface LogicalVolume {
  vg: string;
  lv: string;
  path: string;
  size: number;
  /** Active before we came: someone else's, left as it is. */
  wasActive: boolean;
}

export interface LvmOptions {
  runner: CommandRunner;
  cleanup: CleanupStack;
}

const common = (device: string): string[] => ['--devices', device, '--config', LVM_READ_ONLY_CONFIG];

function parseReport(json: string, key: 'pv' | 'lv'): Record<string, string>[] {
  try {
    const doc = JSON.parse(json) as { report?: Record<string, Record<string, string>[]>[] };
    return doc.report?.[0]?.[key] ?? [];
  } catch {
    throw new StiefelError('E_LVM', `could not read the LVM report: ${json.slice(0, 200)}`);
  }
}

/**
 * Activates the VG on `device` (a PV) unless it is active already, and lists
 * its LVs; deactivation of what we activated is registered for cleanup.
 */
export async function activateVolumeGroup(device: string, o: LvmOptions): Promise<LogicalVolume[]> {
  const pvs = parseReport(await runChecked(o.runner, 'E_LVM', 'pvs', [...common(device), '--reportformat', 'json', '-o', 'pv_name,vg_name']), 'pv');
  const vg = pvs.find((p) => p.vg_name)?.vg_name;
  if (!vg) throw new StiefelError('E_LVM', `${device} is an LVM physical volume without a volume group`);
  const lvs = parseReport(await runChecked(o.runner, 'E_LVM', 'lvs', [...common(device), '--reportformat', 'json', '-o', 'lv_name,vg_name,lv_path,lv_size,lv_active', '--units', 'b', '--nosuffix']), 'lv')
    .filter((l) => l.vg_name === vg && l.lv_path)
    .map((l) => ({ vg, lv: l.lv_name ?? '', path: l.lv_path!, size: Number(l.lv_size ?? 0), wasActive: l.lv_active === 'active' }));
  if (lvs.some((l) => l.wasActive)) return lvs.filter((l) => l.wasActive);
  o.cleanup.push(`LVM volume group ${vg}`, async () => void (await runChecked(o.runner, 'E_LVM', 'vgchange', [...common(device), '--activate', 'n', vg])));
  await runChecked(o.runner, 'E_LVM', 'vgchange', [...common(device), '--activate', 'y', vg]);
  return lvs;
}
