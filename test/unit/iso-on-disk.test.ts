// Where an ISO file is for the booted kernel's initramfs: mountinfo read,
// the mount holding a path, and the refusals (RAM, network, device-mapper).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { locateIsoFile, mountOf, parseMountinfo } from '../../src/iso/iso-on-disk';

// As stiefelOS's /proc/self/mountinfo looks with a USB disk mounted by the menu (item f).
const MOUNTINFO = [
  '1 1 0:2 / / rw - rootfs rootfs rw',
  '20 1 0:20 / /proc rw,nosuid,nodev,noexec - proc proc rw',
  '23 1 0:23 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755',
  '30 23 8:17 / /run/stiefel-media/sdb1 ro,relatime - exfat /dev/sdb1 ro',
  '31 23 254:0 / /run/stiefel-media/dm-0 ro - ext4 /dev/mapper/crypt ro',
  '32 23 0:40 / /run/stiefel-media/nfs ro - nfs4 10.0.0.5:/isos ro',
  '33 23 8:33 /images /run/stiefel-media/bound ro shared:5 - ext4 /dev/sdc1 ro',
  '34 23 8:49 / /run/stiefel-media/with\\040blank ro - vfat /dev/sdd1 ro',
  'garbage line',
  '',
].join('\n');

test('mountinfo: fields read, escapes undone, optional fields skipped, junk ignored', () => {
  const m = parseMountinfo(MOUNTINFO);
  assert.equal(m.length, 8);
  assert.deepEqual(m[3], { majorMinor: '8:17', root: '/', mountPoint: '/run/stiefel-media/sdb1', fsType: 'exfat', source: '/dev/sdb1' });
  assert.deepEqual(m[6], { majorMinor: '8:33', root: '/images', mountPoint: '/run/stiefel-media/bound', fsType: 'ext4', source: '/dev/sdc1' });
  assert.equal(m[7]!.mountPoint, '/run/stiefel-media/with blank');
  assert.equal(mountOf('/run/stiefel-media/sdb1/a/x.iso', m)?.source, '/dev/sdb1');
  assert.equal(mountOf('/run/stiefel-media/sdb10/x.iso', m)?.fsType, 'tmpfs', 'a prefix of a name is not a parent');
  assert.equal(mountOf('/etc/x', m)?.fsType, 'rootfs');
  assert.equal(mountOf('/x', []), undefined);
});

test('an ISO on a disk: its path inside that file system; in RAM, on the network or in device-mapper: why not', () => {
  const m = parseMountinfo(MOUNTINFO);
  assert.deepEqual(locateIsoFile('/run/stiefel-media/sdb1/isos/debian-live.iso', m), { found: true, device: '/dev/sdb1', fsType: 'exfat', path: '/isos/debian-live.iso' });
  assert.deepEqual(locateIsoFile('/run/stiefel-media/bound/x.iso', m), { found: true, device: '/dev/sdc1', fsType: 'ext4', path: '/images/x.iso' }, 'a bind mount of a subdirectory');
  assert.deepEqual(locateIsoFile('/run/stiefel-media/with blank/x.iso', m), { found: true, device: '/dev/sdd1', fsType: 'vfat', path: '/x.iso' });
  const no = (file: string): string => {
    const r = locateIsoFile(file, m);
    assert.equal(r.found, false);
    return r.found ? '' : r.why;
  };
  assert.equal(no('/run/stiefel-iso/x.iso'), "/run/stiefel-iso/x.iso is in RAM (tmpfs), where the ISO's kernel cannot see it");
  assert.match(no('/x.iso'), /is in RAM \(rootfs\)/);
  assert.match(no('/run/stiefel-media/nfs/x.iso'), /is on nfs4 \(10\.0\.0\.5:\/isos\), not on a disk/);
  assert.match(no('/run/stiefel-media/dm-0/x.iso'), /is on \/dev\/mapper\/crypt, a device-mapper volume \(LUKS or LVM\) that the ISO's initramfs does not open/);
  assert.match(locateIsoFile('/x.iso', []).found ? '' : (locateIsoFile('/x.iso', []) as { why: string }).why, /no file system in \/proc\/self\/mountinfo holds \/x\.iso/);
  // A desktop's own Linux, the ISO in a home directory on the root disk.
  const desktop = parseMountinfo('26 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n');
  assert.deepEqual(locateIsoFile('/home/me/x.iso', desktop), { found: true, device: '/dev/nvme0n1p2', fsType: 'ext4', path: '/home/me/x.iso' });
});
