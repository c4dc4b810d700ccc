// The stick's partition table against the UEFI spec: protective MBR bytes,
// both GPT headers with their CRC32s, the entry array, the legacy-BIOS-
// bootable attribute, read back by the project's own GPT reader (which also
// falls back to the backup header), and properties over disk sizes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { crc32 } from '../../src/disk/crc32';
import { decodeGptHeader, decodeGuid, readPartitionTable } from '../../src/disk/partition-table';
import {
  GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE,
  GPT_BACKUP_SECTORS,
  GPT_PRIMARY_SECTORS,
  GPT_TYPE_ESP,
  GptEncodeError,
  encodeChs,
  encodeGpt,
  encodeGuid,
  encodeProtectiveMbr,
  guidFromRandom,
  type GptDiskSpec,
} from '../../src/usbdrive/gpt';

const DISK_GUID = '5a1e0c4e-3b7a-4f2e-9d1c-0123456789ab';
const PART_GUID = 'd2c3b4a5-9687-4a3b-8c1d-fedcba987654';

/** A whole disk in memory, as the reader sees a device. */
function diskOf(spec: GptDiskSpec): Buffer {
  const g = encodeGpt(spec);
  const disk = Buffer.alloc(spec.diskSectors * 512);
  g.primary.copy(disk, 0);
  g.backup.copy(disk, g.backupLba * 512);
  return disk;
}
const readAtOf = (disk: Buffer) => async (offset: number, length: number) => disk.subarray(offset, Math.min(disk.length, offset + length));

const stickSpec = (diskSectors = 172032): GptDiskSpec => ({
  diskSectors,
  diskGuid: DISK_GUID,
  bootCode: Buffer.alloc(440, 0xfa),
  partitions: [{ typeGuid: GPT_TYPE_ESP, uniqueGuid: PART_GUID, firstLba: 2048, lastLba: diskSectors - 2049, attributes: [GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE], name: 'stiefelsystem' }],
});

test('crc32 is the IEEE one the UEFI spec names (check value of "123456789")', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
});

test('GUIDs: the ESP type GUID has its well-known on-disk bytes; text -> bytes -> text round-trips', () => {
  assert.equal(encodeGuid(GPT_TYPE_ESP).toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
      const g = guidFromRandom(bytes);
      assert.match(g, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(decodeGuid(encodeGuid(g), 0), g);
    }),
  );
  assert.throws(() => encodeGuid('not-a-guid'), GptEncodeError);
});

test('protective MBR: boot code, one 0xEE record from LBA 1 over the disk, boot indicator 0, 0xAA55', () => {
  const code = Buffer.alloc(440, 0xab);
  const mbr = encodeProtectiveMbr(172032, code);
  assert.equal(mbr.length, 512);
  assert.ok(mbr.subarray(0, 440).equals(code));
  assert.ok(mbr.subarray(440, 446).equals(Buffer.alloc(6)), 'disk signature and reserved bytes stay 0');
  const rec = mbr.subarray(446, 462);
  assert.equal(rec[0], 0x00, 'BootIndicator: UEFI ignores it, some firmware would not');
  assert.deepEqual([...rec.subarray(1, 4)], [0x00, 0x02, 0x00], 'StartingCHS 0x000200');
  assert.equal(rec[4], 0xee);
  assert.deepEqual([...rec.subarray(5, 8)], encodeChs(172031));
  assert.equal(rec.readUInt32LE(8), 1);
  assert.equal(rec.readUInt32LE(12), 172031, 'SizeInLBA: the disk minus one');
  assert.ok(mbr.subarray(462, 510).equals(Buffer.alloc(48)), 'the other three records are empty');
  assert.deepEqual([mbr[510], mbr[511]], [0x55, 0xaa]);
  // A disk past 2 TiB: the size field saturates, the CHS says "not representable".
  const big = encodeProtectiveMbr(2 ** 33);
  assert.equal(big.readUInt32LE(446 + 12), 0xffffffff);
  assert.deepEqual([...big.subarray(446 + 5, 446 + 8)], [0xff, 0xff, 0xff]);
  assert.throws(() => encodeProtectiveMbr(1000, Buffer.alloc(441)), GptEncodeError);
});

test('CHS in the 255/63 geometry', () => {
  assert.deepEqual(encodeChs(0), [0, 1, 0]);
  assert.deepEqual(encodeChs(62), [0, 63, 0]);
  assert.deepEqual(encodeChs(63), [1, 1, 0]);
  assert.deepEqual(encodeChs(255 * 63), [0, 1, 1]);
  // Cylinder 1023: its two high bits go into the sector byte.
  assert.deepEqual(encodeChs(1023 * 255 * 63), [0, 1 | 0xc0, 0xff]);
  assert.deepEqual(encodeChs(1024 * 255 * 63), [0xff, 0xff, 0xff]);
});

test('both GPT headers: signature, revision, size 92, CRC32 over 92 bytes with the field zeroed, LBAs mirrored', () => {
  const spec = stickSpec();
  const g = encodeGpt(spec);
  assert.equal(g.primary.length, GPT_PRIMARY_SECTORS * 512);
  assert.equal(g.backup.length, GPT_BACKUP_SECTORS * 512);
  const last = spec.diskSectors - 1;
  const primary = g.primary.subarray(512, 1024);
  const backup = g.backup.subarray(g.backup.length - 512);
  for (const [h, my, alt, entries] of [
    [primary, 1, last, 2],
    [backup, last, 1, last - 32],
  ] as const) {
    assert.equal(h.toString('latin1', 0, 8), 'EFI PART');
    assert.equal(h.readUInt32LE(8), 0x00010000);
    assert.equal(h.readUInt32LE(12), 92);
    const copy = Buffer.from(h.subarray(0, 92));
    copy.writeUInt32LE(0, 16);
    assert.equal(h.readUInt32LE(16), crc32(copy), 'HeaderCRC32');
    assert.equal(h.readUInt32LE(20), 0, 'Reserved');
    assert.equal(Number(h.readBigUInt64LE(24)), my);
    assert.equal(Number(h.readBigUInt64LE(32)), alt);
    assert.equal(Number(h.readBigUInt64LE(40)), 34, 'FirstUsableLBA');
    assert.equal(Number(h.readBigUInt64LE(48)), last - 33, 'LastUsableLBA');
    assert.equal(decodeGuid(h, 56), DISK_GUID);
    assert.equal(Number(h.readBigUInt64LE(72)), entries);
    assert.equal(h.readUInt32LE(80), 128);
    assert.equal(h.readUInt32LE(84), 128);
    assert.ok(h.subarray(92).equals(Buffer.alloc(420)), 'the rest of the block is zero');
    assert.ok('header' in decodeGptHeader(h), 'the project reader accepts it');
  }
  // The entry array is the same at both ends, and its CRC32 is in both headers.
  const entriesA = g.primary.subarray(1024);
  const entriesB = g.backup.subarray(0, g.backup.length - 512);
  assert.ok(entriesA.equals(entriesB));
  assert.equal(primary.readUInt32LE(88), crc32(entriesA));
  assert.equal(backup.readUInt32LE(88), crc32(entriesA));
});

test('the ESP entry: type, unique GUID, LBAs, the legacy-BIOS-bootable attribute (bit 2) and its name', () => {
  const g = encodeGpt(stickSpec());
  const e = g.primary.subarray(1024, 1024 + 128);
  assert.equal(decodeGuid(e, 0), GPT_TYPE_ESP);
  assert.equal(decodeGuid(e, 16), PART_GUID);
  assert.equal(Number(e.readBigUInt64LE(32)), 2048);
  assert.equal(Number(e.readBigUInt64LE(40)), 172032 - 2049);
  assert.equal(e.readBigUInt64LE(48), 4n, 'Attributes: only Legacy BIOS Bootable');
  assert.equal(e.toString('utf16le', 56, 56 + 26), 'stiefelsystem');
  assert.ok(g.primary.subarray(1024 + 128).equals(Buffer.alloc(127 * 128)), 'the other 127 entries are unused');
});

test("the project's GPT reader sees the ESP; with the primary header broken it falls back to the backup", async () => {
  const disk = diskOf(stickSpec());
  const t = await readPartitionTable(readAtOf(disk), disk.length);
  assert.equal(t?.scheme, 'gpt');
  assert.deepEqual(t?.problems, []);
  assert.deepEqual(t?.partitions, [{ number: 1, offset: 2048 * 512, size: (172032 - 4096) * 512, type: GPT_TYPE_ESP, uuid: PART_GUID, name: 'stiefelsystem' }]);
  disk[512 + 30] = disk[512 + 30]! ^ 0xff; // inside the primary header: its CRC no longer matches
  const t2 = await readPartitionTable(readAtOf(disk), disk.length);
  assert.match(t2!.problems[0]!, /primary GPT header CRC32 mismatch; using the backup GPT/);
  assert.equal(t2!.partitions[0]!.uuid, PART_GUID);
});

test('property: any disk size and partition inside the usable LBAs encodes and reads back exactly', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 68, max: 40_000 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), async (sectors, a, b) => {
      const lastUsable = sectors - 1 - 33;
      const lo = 34 + Math.floor(Math.min(a, b) * (lastUsable - 34));
      const hi = 34 + Math.floor(Math.max(a, b) * (lastUsable - 34));
      const spec: GptDiskSpec = { diskSectors: sectors, diskGuid: DISK_GUID, partitions: [{ typeGuid: GPT_TYPE_ESP, uniqueGuid: PART_GUID, firstLba: lo, lastLba: hi, attributes: [GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE], name: 'x' }] };
      const disk = diskOf(spec);
      const t = await readPartitionTable(readAtOf(disk), disk.length);
      assert.deepEqual(t?.problems, []);
      assert.deepEqual(t?.partitions.map((p) => [p.offset / 512, p.size / 512]), [[lo, hi - lo + 1]]);
    }),
    { numRuns: 200 },
  );
});

test('partitions outside the usable LBAs and disks too small for a GPT are refused', () => {
  assert.throws(() => encodeGpt({ ...stickSpec(4096), partitions: [{ ...stickSpec(4096).partitions[0]!, firstLba: 33 }] }), /outside the usable LBAs 34-/);
  assert.throws(() => encodeGpt({ ...stickSpec(4096), partitions: [{ ...stickSpec(4096).partitions[0]!, lastLba: 4096 - 33 }] }), /outside the usable LBAs/);
  assert.throws(() => encodeGpt({ diskSectors: 60, diskGuid: DISK_GUID, partitions: [] }), /cannot hold a GPT/);
});
