// The ISO 9660, Rock Ridge and El Torito decoders and the reader on hand-made
// bytes (test/unit/iso-bytes.ts): each field where the standard puts it, and
// every damaged length, offset and chain ending in one IsoFormatError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StiefelError } from '../../src/errors';
import { decodeBootCatalog, decodeBootRecord } from '../../src/iso/el-torito';
import { decodeDirectoryRecord, decodeDirectoryRecords, decodeVolumeDescriptor, grubIsoUuid, isoName, IsoFormatError } from '../../src/iso/iso9660';
import { IsoImage } from '../../src/iso/reader';
import { decodeRockRidge, decodeSuspArea } from '../../src/iso/rock-ridge';
import { bootCatalog, bootRecord, CE, directory, dirRecord, image, memorySource, NM, sampleImage, SECTOR, SL, susp, terminator, volumeDescriptor } from './iso-bytes';

const isoError = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof IsoFormatError, `an IsoFormatError, not ${String(err)}`);
  assert.ok(err instanceof StiefelError);
  assert.match(err.message, pattern);
  return true;
};

test('a directory record: extent, length, flags, identifier and the system use area after the padding byte', () => {
  const r = decodeDirectoryRecord(dirRecord({ extent: 1234, length: 5678, flags: 2, name: 'BOOT', systemUse: NM('boot') }), 0);
  assert.equal(r.extent, 1234);
  assert.equal(r.dataLength, 5678);
  assert.equal(r.flags, 2);
  assert.equal(r.identifier.toString(), 'BOOT');
  // LEN_FI 4 is even: one padding byte, then the NM entry.
  assert.equal(r.systemUse.toString('latin1', 0, 2), 'NM');
  assert.equal(r.recorded, Date.UTC(2024, 0, 2, 3, 4, 5) / 1000);
});

test('a directory record shorter than 34 bytes, or running past its sector, or with an identifier too long, is refused', () => {
  const good = dirRecord({ extent: 1, length: 1, name: 'A;1' });
  const short = Buffer.from(good);
  short[0] = 20;
  assert.throws(() => decodeDirectoryRecord(short, 0), isoError(/shorter than the 34/));
  assert.throws(() => decodeDirectoryRecord(good.subarray(0, good.length - 2), 0), isoError(/runs past the end/));
  const longName = Buffer.from(good);
  longName[32] = 200;
  assert.throws(() => decodeDirectoryRecord(longName, 0), isoError(/file identifier of 200 bytes/));
});

test('records never cross a sector: a zero length byte skips to the next sector', () => {
  const dir = directory(20, 20, Array.from({ length: 80 }, (_, i) => dirRecord({ extent: 100 + i, length: 1, name: `FILE${String(i).padStart(4, '0')}.TXT;1` })), { sectors: 3 });
  const records = decodeDirectoryRecords(dir, { maxRecords: 1000 });
  assert.equal(records.length, 82);
  assert.equal(isoName(records[81]!.identifier, false), 'FILE0079.TXT');
  assert.throws(() => decodeDirectoryRecords(dir, { maxRecords: 10 }), isoError(/more than 10 records/));
});

test('ISO 9660 names lose their ;1 version and an empty extension; Joliet names are UCS-2', () => {
  assert.equal(isoName(Buffer.from('VMLINUZ.;1'), false), 'VMLINUZ');
  assert.equal(isoName(Buffer.from('ISOLINUX.CFG;1'), false), 'ISOLINUX.CFG');
  const ucs = Buffer.alloc(20);
  [...'grub.cfg;1'].forEach((c, i) => ucs.writeUInt16BE(c.charCodeAt(0), i * 2));
  assert.equal(isoName(ucs, true), 'grub.cfg');
});

test('the primary volume descriptor: label, size, block size, GRUB\'s UUID; a Joliet SVD is recognised by its escape', () => {
  const pvd = decodeVolumeDescriptor(volumeDescriptor({ volumeId: 'd-live 12.5.0 st amd64', blocks: 4242, rootExtent: 20 }));
  assert.equal(pvd.volumeId, 'd-live 12.5.0 st amd64');
  assert.equal(pvd.volumeBlocks, 4242);
  assert.equal(pvd.blockSize, 2048);
  assert.equal(pvd.root.extent, 20);
  assert.equal(pvd.joliet, false);
  assert.equal(pvd.modified, '2024-06-10T12:34:45.00+00:00');
  assert.equal(grubIsoUuid(pvd.modifiedDigits), '2024-06-10-12-34-45-00');
  const svd = decodeVolumeDescriptor(volumeDescriptor({ type: 2, joliet: true, volumeId: 'Ubuntu 24.04', blocks: 1, rootExtent: 30 }));
  assert.equal(svd.joliet, true);
  assert.equal(svd.volumeId, 'Ubuntu 24.04');
  assert.throws(() => decodeVolumeDescriptor(volumeDescriptor({ blocks: 1, rootExtent: 20, blockSize: 3000 })), isoError(/logical block size is 3000/));
});

test('SUSP: NM split over entries with CONTINUE, SL components, CE, ST; a length past the area is refused', () => {
  const area = Buffer.concat([NM('initrd.img-6.1', 1), NM('.0-18-amd64'), SL('../live/vmlinuz'), CE(40, 100, 200), susp('ST', []), NM('ignored')]);
  const { entries, continuation } = decodeSuspArea(area);
  assert.deepEqual(continuation, { block: 40, offset: 100, length: 200 });
  const rr = decodeRockRidge(entries);
  assert.equal(rr.name, 'initrd.img-6.1.0-18-amd64');
  assert.equal(rr.symlink, '../live/vmlinuz');
  assert.equal(decodeRockRidge(decodeSuspArea(SL('/boot/grub')).entries).symlink, '/boot/grub');
  const bad = NM('x');
  bad[2] = 60;
  assert.throws(() => decodeSuspArea(bad), isoError(/claims 60 bytes/));
});

test('El Torito: the boot record points at the catalog; BIOS and UEFI images; a wrong checksum is refused', () => {
  assert.equal(decodeBootRecord(bootRecord(33)), 33);
  assert.equal(decodeBootRecord(terminator()), null);
  const images = decodeBootCatalog(bootCatalog([{ platformId: 0, loadBlock: 50, sectors: 4 }, { platformId: 0xef, loadBlock: 60, sectors: 5760 }]));
  assert.deepEqual(images.map((i) => [i.platform, i.loadBlock, i.sectorCount, i.emulation, i.bootable]), [['bios', 50, 4, 'none', true], ['uefi', 60, 5760, 'none', true]]);
  assert.throws(() => decodeBootCatalog(bootCatalog([{ platformId: 0, loadBlock: 50, sectors: 4 }], { badChecksum: true })), isoError(/checksum is wrong/));
  assert.throws(() => decodeBootCatalog(Buffer.alloc(SECTOR)), isoError(/no validation entry/));
});

test('the reader: Rock Ridge names, case-insensitive fallback, symlinks, a multi-extent file, the boot catalog', async () => {
  const iso = await IsoImage.open(memorySource(sampleImage()));
  assert.equal(iso.names, 'rock-ridge');
  assert.equal(iso.volume.label, 'SAMPLE');
  const cfg = await iso.lookup('/boot/grub/grub.cfg');
  assert.ok(cfg);
  assert.equal((await iso.readFile(cfg, { maxBytes: 100 })).toString(), 'menuentry\n');
  assert.ok(await iso.lookup('/BOOT/GRUB/GRUB.CFG'), 'isolinux-style case-insensitive match');
  assert.equal((await iso.lookup('/grub/grub.cfg'))?.name, 'grub.cfg', 'through the symlink grub -> boot/grub');
  assert.equal(await iso.lookup('/boot/nothing'), null);
  assert.equal(await iso.lookup('/big.dat/x'), null, 'a file is not a directory');
  const big = await iso.lookup('/big.dat');
  assert.equal(big?.size, SECTOR + 3);
  const data = await iso.readFile(big!, { maxBytes: 1 << 20 });
  assert.equal(data.subarray(SECTOR - 1).toString(), 'axyz');
  await assert.rejects(iso.readFile(big!, { maxBytes: 100 }), (e: StiefelError) => e.code === 'E_ISO_TOO_BIG');
  assert.deepEqual((await iso.bootImages()).map((b) => b.loadBlock), [24]);
});

test('not an ISO, truncated, and a descriptor set without terminator: one clear error each', async () => {
  await assert.rejects(IsoImage.open(memorySource(Buffer.alloc(40 * SECTOR), 'zero.img')), isoError(/^zero\.img is not an ISO 9660 image \(no CD001 at sector 16\)$/));
  await assert.rejects(IsoImage.open(memorySource(Buffer.alloc(100), 'tiny')), isoError(/too short to reach sector 16/));
  const img = sampleImage();
  await assert.rejects(IsoImage.open(memorySource(img.subarray(0, 25 * SECTOR), 'half.iso')), (e: StiefelError) => e.code === 'E_ISO_TRUNCATED' && /half\.iso is truncated/.test(e.message));
  const noTerm = image(100, Object.fromEntries(Array.from({ length: 80 }, (_, i) => [16 + i, volumeDescriptor({ blocks: 100, rootExtent: 20 })])));
  await assert.rejects(IsoImage.open(memorySource(noTerm)), isoError(/no volume descriptor set terminator within 64/));
});

test('hostile lengths: a directory past the end, a huge directory, a file extent past the end', async () => {
  const past = sampleImage({}, [dirRecord({ extent: 29, length: 10 * SECTOR, flags: 2, name: 'BOOT', systemUse: NM('boot') })]);
  await assert.rejects((await IsoImage.open(memorySource(past))).lookup('/boot/x'), isoError(/lies beyond the end of the image/));
  const huge = sampleImage({}, [dirRecord({ extent: 21, length: 0xfffff000, flags: 2, name: 'BOOT', systemUse: NM('boot') })]);
  await assert.rejects((await IsoImage.open(memorySource(huge))).lookup('/boot/x'), isoError(/claims 4294963200 bytes, more than/));
  const file = sampleImage({}, [dirRecord({ extent: 0x7fffffff, length: 100, name: 'F;1', systemUse: NM('f') })]);
  const iso = await IsoImage.open(memorySource(file));
  await assert.rejects(iso.readFile((await iso.lookup('/f'))!, { maxBytes: 1000 }), isoError(/the file f .* lies beyond the end/));
});

test('Rock Ridge continuation areas: followed, a loop or an endless chain refused, never a hang', async () => {
  // The name continues in a CE area at block 27.
  const followed = sampleImage({ 27: NM('ong-name.cfg') }, [dirRecord({ extent: 23, length: 11, name: 'L;1', systemUse: Buffer.concat([NM('a-l', 1), CE(27, 0, NM('ong-name.cfg').length)]) })]);
  assert.ok(await (await IsoImage.open(memorySource(followed))).lookup('/a-long-name.cfg'));
  // Block 27 points at itself.
  const loop = sampleImage({ 27: CE(27, 0, 28) }, [dirRecord({ extent: 23, length: 11, name: 'L;1', systemUse: CE(27, 0, 28) })]);
  await assert.rejects((await IsoImage.open(memorySource(loop))).lookup('/x'), isoError(/form a loop/));
  // A chain through 20 distinct offsets of block 27.
  const chain = Buffer.alloc(SECTOR);
  for (let i = 0; i < 20; i++) CE(27, (i + 1) * 28, 28).copy(chain, i * 28);
  const long = sampleImage({ 27: chain }, [dirRecord({ extent: 23, length: 11, name: 'L;1', systemUse: CE(27, 0, 28) })]);
  await assert.rejects((await IsoImage.open(memorySource(long))).lookup('/x'), isoError(/more than 16 continuation areas/));
  const outside = sampleImage({}, [dirRecord({ extent: 23, length: 11, name: 'L;1', systemUse: CE(27, 2000, 100) })]);
  await assert.rejects((await IsoImage.open(memorySource(outside))).lookup('/x'), isoError(/does not fit its block/));
});

test('symbolic links that loop end after a few hops', async () => {
  const loop = sampleImage({}, [dirRecord({ extent: 0, length: 0, name: 'A;1', systemUse: Buffer.concat([NM('a'), SL('b')]) }), dirRecord({ extent: 0, length: 0, name: 'B;1', systemUse: Buffer.concat([NM('b'), SL('/a')]) })]);
  await assert.rejects((await IsoImage.open(memorySource(loop))).lookup('/a/x'), isoError(/more than 8 symbolic links/));
});

test('without Rock Ridge, Joliet names are used', async () => {
  const ucs = (s: string) => {
    const b = Buffer.alloc(s.length * 2);
    [...s].forEach((c, i) => b.writeUInt16BE(c.charCodeAt(0), i * 2));
    return b;
  };
  const img = image(30, {
    16: volumeDescriptor({ volumeId: 'PLAIN', blocks: 30, rootExtent: 20 }),
    17: volumeDescriptor({ type: 2, joliet: true, volumeId: 'Joliet', blocks: 30, rootExtent: 21 }),
    18: terminator(),
    20: directory(20, 20, [dirRecord({ extent: 23, length: 3, name: 'MIXEDCAS.TXT;1' })]),
    21: directory(21, 21, [dirRecord({ extent: 23, length: 3, name: ucs('MixedCase name.txt;1') })]),
    23: Buffer.from('abc'),
  });
  const iso = await IsoImage.open(memorySource(img));
  assert.equal(iso.names, 'joliet');
  assert.equal(iso.volume.label, 'PLAIN');
  assert.deepEqual((await iso.list('/'))?.map((e) => e.name), ['MixedCase name.txt']);
});
