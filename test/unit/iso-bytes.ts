// Hand-made ISO 9660 bytes for the unit tests: each structure encoded field
// by field from ECMA-119, Rock Ridge and El Torito, so that a test can build
// exactly the damaged image it is about.
import type { IsoSource } from '../../src/iso/reader';

export const SECTOR = 2048;

function both32(b: Buffer, at: number, v: number): void {
  b.writeUInt32LE(v, at);
  b.writeUInt32BE(v, at + 4);
}

export interface RecordSpec {
  extent: number;
  length: number;
  flags?: number;
  /** Raw identifier: a string (latin1) or bytes (0x00 for ".", 0x01 for ".."). */
  name: string | Buffer;
  systemUse?: Buffer;
}

/** ECMA-119 9.1: one directory record. */
export function dirRecord(r: RecordSpec): Buffer {
  const id = typeof r.name === 'string' ? Buffer.from(r.name, 'latin1') : r.name;
  const pad = id.length % 2 === 0 ? 1 : 0;
  const su = r.systemUse ?? Buffer.alloc(0);
  let len = 33 + id.length + pad + su.length;
  if (len % 2) len++;
  const b = Buffer.alloc(len);
  b[0] = len;
  both32(b, 2, r.extent);
  both32(b, 10, r.length);
  b.set([124, 1, 2, 3, 4, 5, 0], 18);
  b[25] = r.flags ?? 0;
  b.writeUInt16LE(1, 28);
  b.writeUInt16BE(1, 30);
  b[32] = id.length;
  id.copy(b, 33);
  su.copy(b, 33 + id.length + pad);
  return b;
}

/** A directory's extent: "." and ".." then the records, none crossing a sector. */
export function directory(self: number, parent: number, records: Buffer[], opts: { sectors?: number; dotSystemUse?: Buffer } = {}): Buffer {
  const sectors = opts.sectors ?? 1;
  const all = [dirRecord({ extent: self, length: sectors * SECTOR, flags: 2, name: Buffer.from([0]), systemUse: opts.dotSystemUse ?? Buffer.alloc(0) }), dirRecord({ extent: parent, length: SECTOR, flags: 2, name: Buffer.from([1]) }), ...records];
  const out = Buffer.alloc(sectors * SECTOR);
  let at = 0;
  for (const r of all) {
    if ((at % SECTOR) + r.length > SECTOR) at = (Math.floor(at / SECTOR) + 1) * SECTOR;
    r.copy(out, at);
    at += r.length;
  }
  return out;
}

export interface DescriptorSpec {
  type?: number;
  volumeId?: string;
  blocks: number;
  rootExtent: number;
  rootLength?: number;
  blockSize?: number;
  /** Joliet: names in UCS-2, escape sequence %/E. */
  joliet?: boolean;
}

/** ECMA-119 8.4 / 8.5. */
export function volumeDescriptor(d: DescriptorSpec): Buffer {
  const b = Buffer.alloc(SECTOR);
  b[0] = d.type ?? 1;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  const text = (s: string, at: number, len: number) => {
    if (d.joliet) {
      const u = Buffer.alloc(len, 0);
      for (let i = 0; i < len / 2; i++) u.writeUInt16BE(i < s.length ? s.charCodeAt(i) : 0x20, i * 2);
      u.copy(b, at);
    } else b.write(s.padEnd(len, ' '), at, 'latin1');
  };
  text('LINUX', 8, 32);
  text(d.volumeId ?? 'TEST', 40, 32);
  both32(b, 80, d.blocks);
  if (d.joliet) b.write('%/E', 88, 'latin1');
  b.writeUInt16LE(1, 120);
  b.writeUInt16BE(1, 122);
  b.writeUInt16LE(d.blockSize ?? SECTOR, 128);
  b.writeUInt16BE(d.blockSize ?? SECTOR, 130);
  dirRecord({ extent: d.rootExtent, length: d.rootLength ?? SECTOR, flags: 2, name: Buffer.from([0]) }).copy(b, 156);
  b.write('2024061012344500', 813, 'latin1');
  b.write('2024061012344500', 830, 'latin1');
  return b;
}

export function terminator(): Buffer {
  const b = Buffer.alloc(SECTOR);
  b[0] = 255;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  return b;
}

/** El Torito 2.0: the boot record volume descriptor. */
export function bootRecord(catalogBlock: number): Buffer {
  const b = Buffer.alloc(SECTOR);
  b[0] = 0;
  b.write('CD001', 1, 'latin1');
  b[6] = 1;
  b.write('EL TORITO SPECIFICATION', 7, 'latin1');
  b.writeUInt32LE(catalogBlock, 71);
  return b;
}

/** El Torito 2.1-2.4: validation entry (checksum made right unless `badChecksum`), the default entry, then one section per extra image. */
export function bootCatalog(images: { platformId: number; loadBlock: number; sectors: number }[], opts: { badChecksum?: boolean } = {}): Buffer {
  const b = Buffer.alloc(SECTOR);
  const first = images[0]!;
  b[0] = 1;
  b[1] = first.platformId;
  b.write('TEST', 4, 'latin1');
  b[30] = 0x55;
  b[31] = 0xaa;
  let sum = 0;
  for (let i = 0; i < 32; i += 2) sum = (sum + b.readUInt16LE(i)) & 0xffff;
  b.writeUInt16LE((0x10000 - sum + (opts.badChecksum ? 1 : 0)) & 0xffff, 28);
  const entry = (at: number, img: { loadBlock: number; sectors: number }) => {
    b[at] = 0x88;
    b[at + 1] = 0;
    b.writeUInt16LE(img.sectors, at + 6);
    b.writeUInt32LE(img.loadBlock, at + 8);
  };
  entry(32, first);
  let at = 64;
  images.slice(1).forEach((img, i, rest) => {
    b[at] = i === rest.length - 1 ? 0x91 : 0x90;
    b[at + 1] = img.platformId;
    b.writeUInt16LE(1, at + 2);
    entry(at + 32, img);
    at += 64;
  });
  return b;
}

/** A SUSP entry (P1281 4.1). */
export function susp(signature: string, data: Buffer | number[], version = 1): Buffer {
  const d = Buffer.from(data);
  return Buffer.concat([Buffer.from(signature, 'latin1'), Buffer.from([4 + d.length, version]), d]);
}

export const SP = () => susp('SP', [0xbe, 0xef, 0]);
export const NM = (name: string, flags = 0) => susp('NM', Buffer.concat([Buffer.from([flags]), Buffer.from(name, 'utf8')]));
export function CE(block: number, offset: number, length: number): Buffer {
  const d = Buffer.alloc(24);
  both32(d, 0, block);
  both32(d, 8, offset);
  both32(d, 16, length);
  return susp('CE', d);
}
/** RRIP SL with plain components ("" for the root). */
export function SL(target: string): Buffer {
  const parts = target.split('/');
  const comps: number[] = [];
  parts.forEach((p, i) => {
    if (p === '' && i === 0) comps.push(0x08, 0);
    else if (p === '.') comps.push(0x02, 0);
    else if (p === '..') comps.push(0x04, 0);
    else if (p !== '') comps.push(0, Buffer.byteLength(p), ...Buffer.from(p));
  });
  return susp('SL', [0, ...comps]);
}

/** An image of `total` sectors with the given sectors filled in. */
export function image(total: number, sectors: Record<number, Buffer>): Buffer {
  const b = Buffer.alloc(total * SECTOR);
  for (const [n, data] of Object.entries(sectors)) data.copy(b, Number(n) * SECTOR);
  return b;
}

/** An in-memory IsoSource, counting the bytes read. */
export function memorySource(b: Buffer, name = 'test.iso'): IsoSource & { bytesRead: number } {
  const s = {
    name,
    size: b.length,
    bytesRead: 0,
    read: async (offset: number, length: number) => {
      s.bytesRead += length;
      return Buffer.from(b.subarray(offset, offset + length));
    },
  };
  return s;
}

/** Root at 20 with BOOT/ (21, Rock Ridge name "boot"), a multi-extent file and a symlink; El Torito catalog at 19. */
export function sampleImage(extra: Record<number, Buffer> = {}, rootRecords?: Buffer[]): Buffer {
  const root = directory(20, 20, rootRecords ?? [
    dirRecord({ extent: 21, length: SECTOR, flags: 2, name: 'BOOT', systemUse: NM('boot') }),
    dirRecord({ extent: 25, length: SECTOR, flags: 0x80, name: 'BIG.DAT;1', systemUse: NM('big.dat') }),
    dirRecord({ extent: 26, length: 3, flags: 0, name: 'BIG.DAT;1', systemUse: NM('big.dat') }),
    dirRecord({ extent: 0, length: 0, name: 'GRUB.;1', systemUse: Buffer.concat([NM('grub'), SL('boot/grub')]) }),
  ], { dotSystemUse: SP() });
  const boot = directory(21, 20, [dirRecord({ extent: 22, length: SECTOR, flags: 2, name: 'GRUB', systemUse: NM('grub') })]);
  const grub = directory(22, 21, [dirRecord({ extent: 23, length: 10, name: 'GRUB.CFG;1', systemUse: NM('grub.cfg') })]);
  return image(30, {
    16: volumeDescriptor({ volumeId: 'SAMPLE', blocks: 30, rootExtent: 20 }),
    17: bootRecord(19),
    18: terminator(),
    19: bootCatalog([{ platformId: 0, loadBlock: 24, sectors: 4 }]),
    20: root,
    21: boot,
    22: grub,
    23: Buffer.from('menuentry\n'),
    25: Buffer.alloc(SECTOR, 0x61),
    26: Buffer.from('xyz'),
    ...extra,
  });
}
