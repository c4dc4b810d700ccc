// The stick's size arithmetic (property tests) and the FAT32 boot sector
// checks, against a boot sector laid out by hand from Microsoft's FAT spec.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeFatBootSector, espBootSectorProblems } from '../../src/usbdrive/fat';
import {
  ESP_FIRST_LBA,
  FAT32_MIN_CLUSTERS,
  MIN_ESP_BYTES,
  MiB,
  StickSizeError,
  clustersNeeded,
  defaultEspBytes,
  fat32Geometry,
  filesFit,
  formatMiB,
  layoutProblems,
  minimumEspBytes,
  parseSize,
  planStick,
  type EspFile,
} from '../../src/usbdrive/layout';

const STICK_FILES: EspFile[] = [
  { path: '/EFI/BOOT/BOOTX64.EFI', size: 140_891 },
  { path: '/syslinux/ldlinux.c32', size: 119_524 },
  { path: '/syslinux/menu.c32', size: 26_228 },
  { path: '/syslinux/libutil.c32', size: 23_524 },
  { path: '/syslinux/syslinux.cfg', size: 900 },
  { path: '/loader/loader.conf', size: 120 },
  { path: '/loader/entries/stiefel-1-client.conf', size: 200 },
  { path: '/stiefelos/vmlinuz', size: 8_200_000 },
  { path: '/stiefelos/initrd.img', size: 52_100_000 },
];

test('parseSize reads sizes as dd and truncate do (binary units)', () => {
  assert.equal(parseSize('100M'), 100 * MiB);
  assert.equal(parseSize('100MiB'), 100 * MiB);
  assert.equal(parseSize('100MB'), 100 * MiB);
  assert.equal(parseSize('1.5G'), 1.5 * 1024 * MiB);
  assert.equal(parseSize('2g'), 2 * 1024 * MiB);
  assert.equal(parseSize('512K'), 512 * 1024);
  assert.equal(parseSize('104857600'), 100 * MiB);
  assert.equal(parseSize(' 64 M '), 64 * MiB);
  for (const bad of ['', 'M', '-1M', '0', '1X', '1.2.3G', 'lots']) assert.equal(parseSize(bad), null, bad);
});

test('formatMiB', () => {
  assert.equal(formatMiB(84 * MiB), '84 MiB');
  assert.equal(formatMiB(1.5 * 1024 * MiB), '1.5 GiB');
  assert.equal(formatMiB(MiB / 2), '0.5 MiB');
});

test('clusters: every file rounds up to whole clusters, every directory takes at least one', () => {
  assert.equal(clustersNeeded([{ path: '/a', size: 1 }], 512), 1 + 1); // the file + the root directory
  assert.equal(clustersNeeded([{ path: '/d/a', size: 513 }], 512), 2 + 1 + 1); // 2 for the file, /d, root
  assert.equal(clustersNeeded([{ path: '/d/a', size: 0 }, { path: '/d/b', size: 4096 }], 4096), 0 + 1 + 1 + 1);
});

test('the stick files get a FAT32 ESP with room to spare; its geometry has enough clusters for FAT32', () => {
  const min = minimumEspBytes(STICK_FILES);
  const def = defaultEspBytes(STICK_FILES);
  assert.ok(filesFit(STICK_FILES, min));
  assert.ok(!filesFit(STICK_FILES, min - MiB));
  assert.ok(def >= min + 16 * MiB && def % MiB === 0);
  const g = fat32Geometry(def);
  assert.equal(g.clusterBytes, 512);
  assert.ok(g.clusters >= FAT32_MIN_CLUSTERS);
  // 512-byte clusters below 512 MiB, 4 KiB from there (FAT32 needs 65525 clusters either way).
  assert.equal(fat32Geometry(512 * MiB).clusterBytes, 4096);
  assert.ok(fat32Geometry(512 * MiB).clusters >= FAT32_MIN_CLUSTERS);
  assert.ok(fat32Geometry(MIN_ESP_BYTES).clusters >= FAT32_MIN_CLUSTERS);
  assert.ok(fat32Geometry(30 * MiB).clusters < FAT32_MIN_CLUSTERS, 'below about 33 MiB FAT32 does not work with 512-byte sectors');
});

test('an image file: 1 MiB, the ESP, 1 MiB for the backup GPT; --size is the whole file', () => {
  const l = planStick({ files: STICK_FILES });
  assert.equal(l.esp.firstLba, ESP_FIRST_LBA);
  assert.equal(l.diskBytes, l.esp.bytes + 2 * MiB);
  assert.deepEqual(layoutProblems(l), []);
  const sized = planStick({ files: STICK_FILES, requestedBytes: 256 * MiB });
  assert.equal(sized.diskBytes, 256 * MiB);
  assert.equal(sized.esp.bytes, 254 * MiB);
  assert.throws(() => planStick({ files: STICK_FILES, requestedBytes: 50 * MiB }), (err: unknown) => {
    assert.ok(err instanceof StickSizeError);
    assert.match(err.message, /^--size 50 MiB is too small: the files need a stick of at least \d+ MiB$/);
    // The size it names does work.
    assert.deepEqual(layoutProblems(planStick({ files: STICK_FILES, requestedBytes: err.neededBytes })), []);
    return true;
  });
});

test('a device: the disk is the whole device (backup GPT at its end), the ESP what the files need plus the margin', () => {
  const dev = 16_008_609_792; // a 16 GB stick's byte count
  const l = planStick({ files: STICK_FILES, deviceBytes: dev });
  assert.equal(l.diskBytes, dev);
  assert.equal(l.esp.bytes, defaultEspBytes(STICK_FILES));
  assert.equal(l.usedBytes, MiB + l.esp.bytes);
  assert.throws(() => planStick({ files: STICK_FILES, deviceBytes: 32 * MiB }), /^Error: the device holds 32 MiB; the stick needs at least \d+ MiB$|device holds 32 MiB/);
  assert.throws(() => planStick({ files: STICK_FILES, deviceBytes: 100 * MiB, requestedBytes: 200 * MiB }), /larger than the device/);
});

const filesArb = fc.array(
  fc.record({ path: fc.constantFrom('/a', '/stiefelos/vmlinuz', '/stiefelos/initrd.img', '/EFI/BOOT/BOOTX64.EFI', '/x/y/zzzzzzzzzzzzzzzzzzzz.conf'), size: fc.integer({ min: 0, max: 300 * MiB }) }),
  { minLength: 1, maxLength: 8 },
);

test('property: every plan is aligned, inside its disk, FAT32-sized and holds the files; every refusal names a size that works', () => {
  fc.assert(
    fc.property(
      filesArb,
      fc.option(fc.integer({ min: 1, max: 4 * 1024 }), { nil: undefined }),
      fc.option(fc.integer({ min: 1, max: 64 * 1024 * 1024 }), { nil: undefined }),
      (files, reqMiB, devKiB) => {
        const requestedBytes = reqMiB === undefined ? undefined : reqMiB * MiB + (reqMiB % 3) * 512;
        const deviceBytes = devKiB === undefined ? undefined : devKiB * 1024 + 512 * (devKiB % 2);
        let l;
        try {
          l = planStick({ files, requestedBytes, deviceBytes });
        } catch (err) {
          assert.ok(err instanceof StickSizeError, String(err));
          const tooSmall = requestedBytes !== undefined ? requestedBytes < err.neededBytes : deviceBytes! < err.neededBytes;
          const tooBigForDevice = requestedBytes !== undefined && deviceBytes !== undefined && requestedBytes > deviceBytes;
          assert.ok(tooSmall || tooBigForDevice, `refused ${requestedBytes}/${deviceBytes} though ${err.neededBytes} is needed`);
          return;
        }
        assert.deepEqual(layoutProblems(l), []);
        assert.ok(filesFit(files, l.esp.bytes));
        assert.ok(l.usedBytes + 33 * 512 <= l.diskBytes);
        if (deviceBytes === undefined) {
          assert.equal(l.diskBytes, l.usedBytes + MiB);
          if (requestedBytes !== undefined) assert.ok(l.diskBytes <= requestedBytes);
        } else {
          assert.equal(l.diskBytes, Math.floor(deviceBytes / 512) * 512);
          if (requestedBytes !== undefined) assert.ok(l.usedBytes <= requestedBytes);
        }
      },
    ),
    { numRuns: 400 },
  );
});

test('property: the default ESP grows with the files and never falls below the minimum', () => {
  fc.assert(
    fc.property(filesArb, fc.integer({ min: 1, max: 50 * MiB }), (files, extra) => {
      const bigger = files.map((f, i) => (i === 0 ? { ...f, size: f.size + extra } : f));
      assert.ok(defaultEspBytes(bigger) >= defaultEspBytes(files));
      assert.ok(defaultEspBytes(files) >= minimumEspBytes(files));
      assert.ok(minimumEspBytes(files) >= MIN_ESP_BYTES);
    }),
    { numRuns: 200 },
  );
});

/** A FAT32 boot sector as the spec lays it out, field by field. */
function fat32BootSector(f: { hidden: number; total: number; spc: number; fatSz: number; volId: number; label: string; bk?: number }): Buffer {
  const b = Buffer.alloc(512);
  b.set([0xeb, 0x58, 0x90], 0); // BS_jmpBoot
  b.write('mkfs.fat', 3, 'latin1'); // BS_OEMName
  b.writeUInt16LE(512, 11); // BPB_BytsPerSec
  b[13] = f.spc; // BPB_SecPerClus
  b.writeUInt16LE(32, 14); // BPB_RsvdSecCnt
  b[16] = 2; // BPB_NumFATs
  b.writeUInt16LE(0, 17); // BPB_RootEntCnt: 0 on FAT32
  b.writeUInt16LE(0, 19); // BPB_TotSec16
  b[21] = 0xf8; // BPB_Media
  b.writeUInt16LE(0, 22); // BPB_FATSz16: 0 on FAT32
  b.writeUInt16LE(32, 24); // BPB_SecPerTrk
  b.writeUInt16LE(8, 26); // BPB_NumHeads
  b.writeUInt32LE(f.hidden, 28); // BPB_HiddSec
  b.writeUInt32LE(f.total, 32); // BPB_TotSec32
  b.writeUInt32LE(f.fatSz, 36); // BPB_FATSz32
  b.writeUInt32LE(2, 44); // BPB_RootClus
  b.writeUInt16LE(1, 48); // BPB_FSInfo
  b.writeUInt16LE(f.bk ?? 6, 50); // BPB_BkBootSec
  b[64] = 0x80; // BS_DrvNum
  b[66] = 0x29; // BS_BootSig
  b.writeUInt32LE(f.volId, 67); // BS_VolID
  b.write(f.label.padEnd(11), 71, 'latin1'); // BS_VolLab
  b.write('FAT32   ', 82, 'latin1'); // BS_FilSysType
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

test('FAT32 boot sector: fields decoded, the cluster count that makes it FAT32', () => {
  const s = fat32BootSector({ hidden: 2048, total: 167936, spc: 1, fatSz: 1309, volId: 0xeaa12f7a, label: 'STIEFEL' });
  const d = decodeFatBootSector(s);
  assert.ok(!('problem' in d));
  assert.equal(d.hiddenSectors, 2048);
  assert.equal(d.totalSectors, 167936);
  assert.equal(d.fatSectors, 1309);
  assert.equal(d.clusters, 167936 - 32 - 2 * 1309);
  assert.equal(d.volumeId, 0xeaa12f7a);
  assert.equal(d.volumeLabel, 'STIEFEL    ');
  assert.equal(d.fsType, 'FAT32   ');
  assert.equal(d.backupBootSector, 6);
  assert.equal(d.rootCluster, 2);
  assert.ok(d.signature);
  const want = { hiddenSectors: 2048, totalSectors: 167936, volumeId: 0xeaa12f7a, label: 'STIEFEL' };
  assert.deepEqual(espBootSectorProblems(s, want), []);
});

test('FAT32 boot sector checks: hidden sectors left at 0, a wrong size, FAT16, no signature are each named', () => {
  const want = { hiddenSectors: 2048, totalSectors: 167936, volumeId: 1, label: 'STIEFEL' };
  const good = { hidden: 2048, total: 167936, spc: 1, fatSz: 1309, volId: 1, label: 'STIEFEL' };
  assert.deepEqual(espBootSectorProblems(fat32BootSector({ ...good, hidden: 0 }), want), ["BPB_HiddSec is 0, not the partition's first LBA 2048"]);
  assert.deepEqual(espBootSectorProblems(fat32BootSector({ ...good, total: 100000 }), want), ["100000 sectors, not the partition's 167936"]);
  assert.match(espBootSectorProblems(fat32BootSector({ ...good, total: 60000 }), { ...want, totalSectors: 60000 }).join(), /not FAT32 \(\d+ clusters\)/);
  const noSig = fat32BootSector(good);
  noSig[511] = 0;
  assert.deepEqual(espBootSectorProblems(noSig, want), ['no 0x55 0xAA signature']);
  const fat16 = fat32BootSector(good);
  fat16.writeUInt16LE(200, 22); // BPB_FATSz16 set: a FAT12/16 layout
  fat16.writeUInt16LE(512, 17);
  assert.match(espBootSectorProblems(fat16, want).join(), /not FAT32/);
  assert.match(espBootSectorProblems(fat32BootSector({ ...good, label: 'OTHER' }), want).join(), /label 'OTHER', not 'STIEFEL'/);
  assert.deepEqual(decodeFatBootSector(Buffer.alloc(100)), { problem: 'the boot sector is short' });
  assert.deepEqual(decodeFatBootSector(Buffer.alloc(512)), { problem: 'BPB_BytsPerSec is 0' });
});

test('property: the boot sector decoder never throws on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), (bytes) => {
      const d = decodeFatBootSector(bytes);
      if (!('problem' in d)) assert.ok(d.clusters >= 0);
    }),
    { numRuns: 500 },
  );
});
