// What TARGET is and whether its disk is in use, from hand-written lsblk
// output and a fake sysfs tree: every refusal is one line naming the fix.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../../src/errors';
import { describeDisk, diskInUse, looksRemovable, parseLsblk, readSysfsBlock, resolveTarget } from '../../src/usbdrive/target';

const dir = mkdtempSync(join(tmpdir(), 'stf13-target-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** lsblk -J -b -o PATH,TYPE,SIZE,MODEL,VENDOR,TRAN,RM,HOTPLUG,FSTYPE,LABEL,MOUNTPOINTS, as util-linux 2.38 prints it. */
const LSBLK = JSON.stringify({
  blockdevices: [
    {
      path: '/dev/sdb', type: 'disk', size: 16008609792, model: 'Cruzer Blade    ', vendor: 'SanDisk ', tran: 'usb', rm: true, hotplug: true, fstype: null, label: null, mountpoints: [null],
      children: [
        { path: '/dev/sdb1', type: 'part', size: 536870912, model: null, vendor: null, tran: null, rm: true, hotplug: true, fstype: 'vfat', label: 'MYSTICK', mountpoints: ['/media/me/MYSTICK'] },
        { path: '/dev/sdb2', type: 'part', size: 1073741824, model: null, vendor: null, tran: null, rm: true, hotplug: true, fstype: 'swap', label: null, mountpoints: ['[SWAP]'] },
        {
          path: '/dev/sdb3', type: 'part', size: 8589934592, model: null, vendor: null, tran: null, rm: true, hotplug: true, fstype: 'crypto_LUKS', label: null, mountpoints: [null],
          children: [
            { path: '/dev/mapper/luks-abc', type: 'crypt', size: 8573157376, fstype: 'LVM2_member', mountpoints: [null], children: [{ path: '/dev/mapper/vg-root', type: 'lvm', size: 8000000000, fstype: 'ext4', mountpoints: ['/'] }] },
          ],
        },
        { path: '/dev/sdb4', type: 'part', size: 100000000, fstype: 'LVM2_member', mountpoints: [null] },
      ],
    },
  ],
});

test('a disk in use: every mount, swap, open LUKS container, active LVM volume and the running root, each with its fix', () => {
  const [disk] = parseLsblk(LSBLK);
  assert.deepEqual(diskInUse(disk!, []), [
    '/dev/sdb1 is mounted on /media/me/MYSTICK: unmount it first (umount /media/me/MYSTICK)',
    '/dev/sdb2 is in use as swap: swapoff /dev/sdb2 first',
    '/dev/mapper/luks-abc is an open LUKS container on this disk: close it first (cryptsetup close luks-abc)',
    "/dev/mapper/vg-root holds the running system's root file system: choose another disk",
    '/dev/mapper/vg-root is an active LVM volume on this disk: deactivate its volume group first (vgchange -an)',
  ]);
});

test('a disk not in use: an inactive LVM member and a closed LUKS partition are fine (they are what gets erased)', () => {
  const clean = JSON.stringify({
    blockdevices: [{ path: '/dev/sdc', type: 'disk', size: 1e9, mountpoints: [null], children: [{ path: '/dev/sdc1', type: 'part', size: 5e8, fstype: 'LVM2_member', mountpoints: [null] }, { path: '/dev/sdc2', type: 'part', size: 4e8, fstype: 'crypto_LUKS', mountpoints: [null] }] }],
  });
  assert.deepEqual(diskInUse(parseLsblk(clean)[0]!, []), []);
  // Swap known only from /proc/swaps (an older lsblk) still counts.
  assert.deepEqual(diskInUse(parseLsblk(clean)[0]!, ['/dev/sdc2']), ['/dev/sdc2 is in use as swap: swapoff /dev/sdc2 first']);
});

test('the description names model, size, transport and every partition', () => {
  const [disk] = parseLsblk(LSBLK);
  const text = describeDisk(disk!);
  assert.equal(
    text.split('\n')[0],
    '/dev/sdb: SanDisk Cruzer Blade, 16.01 GB (14.9 GiB), usb, removable',
  );
  assert.match(text, /^ {2}\/dev\/sdb1 {2}vfat 'MYSTICK' {2}536\.9 MB {2}mounted on \/media\/me\/MYSTICK$/m);
  assert.match(text, /^ {2}\/dev\/sdb3 {2}crypto_LUKS {2}8\.59 GB$/m);
  assert.ok(looksRemovable(disk!));
  const loop = parseLsblk(JSON.stringify({ blockdevices: [{ path: '/dev/loop3', type: 'loop', size: 268435456, model: null, rm: false, hotplug: false, mountpoints: [null] }] }))[0]!;
  assert.equal(describeDisk(loop), '/dev/loop3: no model name, 268.4 MB (256 MiB)\n  no partitions');
  assert.equal(looksRemovable(loop), false);
  // The disk's own table, read where the kernel did not scan it (a loop device).
  const contents = { scheme: 'gpt' as const, partitions: [{ number: 1, size: 84_934_656, kind: 'vfat' as const, label: 'STIEFEL' }, { number: 2, size: 1e9, kind: 'unknown' as const, label: null }] };
  assert.equal(describeDisk(loop, contents), "/dev/loop3: no model name, 268.4 MB (256 MiB)\n  GPT partition table, 2 partition(s)\n  partition 1  vfat 'STIEFEL'  84.9 MB\n  partition 2  unknown contents  1.00 GB");
});

test('sysfs: a partition names its disk; a device-mapper volume its name', async () => {
  const sys = join(dir, 'sys');
  mkdirSync(join(sys, 'devices/pci0/usb1/block/sdb/sdb1'), { recursive: true });
  mkdirSync(join(sys, 'devices/pci0/usb1/block/sdb/queue'), { recursive: true });
  mkdirSync(join(sys, 'devices/virtual/block/dm-0/dm'), { recursive: true });
  mkdirSync(join(sys, 'class/block'), { recursive: true });
  writeFileSync(join(sys, 'devices/pci0/usb1/block/sdb/size'), '31266816\n');
  writeFileSync(join(sys, 'devices/pci0/usb1/block/sdb/ro'), '0\n');
  writeFileSync(join(sys, 'devices/pci0/usb1/block/sdb/queue/logical_block_size'), '512\n');
  writeFileSync(join(sys, 'devices/pci0/usb1/block/sdb/sdb1/partition'), '1\n');
  writeFileSync(join(sys, 'devices/pci0/usb1/block/sdb/sdb1/size'), '1048576\n');
  writeFileSync(join(sys, 'devices/virtual/block/dm-0/dm/name'), 'vg-root\n');
  symlinkSync('../../devices/pci0/usb1/block/sdb', join(sys, 'class/block/sdb'));
  symlinkSync('../../devices/pci0/usb1/block/sdb/sdb1', join(sys, 'class/block/sdb1'));
  symlinkSync('../../devices/virtual/block/dm-0', join(sys, 'class/block/dm-0'));
  assert.deepEqual(await readSysfsBlock('sdb', sys), { partition: undefined, parent: undefined, dmName: undefined, sizeSectors: 31266816, logicalBlockSize: 512, readOnly: false });
  const p = await readSysfsBlock('sdb1', sys);
  assert.equal(p.partition, 1);
  assert.equal(p.parent, 'sdb');
  assert.equal(p.logicalBlockSize, 512, "a partition's sector size is its disk's");
  assert.equal((await readSysfsBlock('dm-0', sys)).dmName, 'vg-root');
});

test('TARGET: a new file, an existing file, a directory, a missing directory, a missing device, a character device', async () => {
  assert.deepEqual(await resolveTarget(join(dir, 'new.img')), { kind: 'image', path: join(dir, 'new.img'), existingBytes: undefined });
  writeFileSync(join(dir, 'old.img'), 'abc');
  assert.deepEqual(await resolveTarget(join(dir, 'old.img')), { kind: 'image', path: join(dir, 'old.img'), existingBytes: 3 });
  const refused = async (path: string, message: RegExp): Promise<void> => {
    await assert.rejects(resolveTarget(path), (err: unknown) => err instanceof UsageError && message.test(err.message));
  };
  await refused(dir, /is a directory: give an image file name inside it \(e\.g\. .*stiefel-stick\.img\) or a whole disk such as \/dev\/sdX$/);
  await refused(join(dir, 'nowhere', 'x.img'), /^the directory .*nowhere for the image file .* does not exist: create it first or choose another path$/);
  await refused('/dev/sdzz', /^\/dev\/sdzz does not exist: plug the stick in and look for its name with 'lsblk -d -o PATH,MODEL,SIZE,TRAN'$/);
  await refused('/dev/null', /^\/dev\/null is neither a disk nor an image file/);
});
