// Property tests: every parser and decoder returns entries and reasons for
// any input, never throws, and whatever it returns is sane: every file an
// entry names stays inside its partition, one default at most, a reason for
// every skip, a command line that fits on one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { compareVersions } from '../../src/boot-entries/version';
import { parseBlsEntry, parseLoaderConf, globMatch } from '../../src/boot-entries/bls';
import { parseGrubConfig } from '../../src/boot-entries/grub';
import { parseSyslinux } from '../../src/boot-entries/syslinux';
import { parseOverride } from '../../src/boot-entries/override';
import { findKernelPairs } from '../../src/boot-entries/kernel-pairs';
import { decodePeHeader } from '../../src/boot-entries/pe';
import { ukiCandidate } from '../../src/boot-entries/uki';
import { parseOsRelease } from '../../src/boot-entries/os-release';
import { normalizeBootPath, type BootEntrySource, type ParseResult } from '../../src/boot-entries/types';
import { readPartitionTable } from '../../src/disk/partition-table';
import { probeFilesystem } from '../../src/disk/fs-probe';

const FIX = join(__dirname, '..', 'fixtures', 'boot-entries');

/** What any parser's result must satisfy, whatever the input. */
function assertSane(r: ParseResult, source: BootEntrySource): void {
  assert.ok(r.candidates.filter((c) => c.isDefault).length <= 1, 'one default at most');
  for (const c of r.candidates) {
    assert.equal(c.source, source);
    for (const ref of [c.kernel, ...c.initrds]) {
      // Rooted, no '..', no empty or '.' components: inside the partition, whatever the config said.
      assert.equal(normalizeBootPath(ref.path), ref.path, `${source} entry "${c.title}" names ${ref.path}`);
    }
    if (c.cmdline !== null) assert.doesNotMatch(c.cmdline, /[\n\r\0]/, 'a command line is one line');
    assert.equal(typeof c.id, 'string');
  }
  for (const k of r.skipped) {
    assert.equal(k.source, source);
    assert.ok(k.reason.length > 0, 'every skip says why');
  }
}
const RUNS = 300;
// Text that looks like the real thing: fragments of real configs recombined.
const grubWords = ['if', 'then', 'else', 'elif', 'fi', 'menuentry', 'submenu', 'function', '{', '}', ';', '\n', '"', "'", '$', '${', 'set', 'linux', 'initrd', '[', ']', '=', '!=', '-e', 'search', '--set=root', 'default=1>0', 'load_env', 'source', 'while', 'do', 'done', '\\', '$1', 'x', '/vmlinuz', '(hd0,gpt2)'];
const grubish = fc.array(fc.constantFrom(...grubWords), { maxLength: 80 }).map((w) => w.join(' '));
const realGrub = readFileSync(join(FIX, 'grub', 'ubuntu-14.04-grub.cfg'), 'utf8');
const mutated = fc.tuple(fc.nat(realGrub.length), fc.nat(200), fc.string()).map(([at, cut, ins]) => realGrub.slice(0, at) + ins + realGrub.slice(at + cut));

test('grub.cfg evaluation never throws and ends', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string(), grubish, mutated), fc.boolean(), (text, known) => {
      const r = parseGrubConfig(text, { prefix: '/boot/grub', ...(known ? { exists: () => false, readFile: () => text } : {}) });
      assertSane(r, 'grub');
    }),
    { numRuns: RUNS },
  );
});

// Lines of the layouts' own keywords with paths that try to leave the partition.
const pathish = fc.constantFrom('/vmlinuz', '../../etc/shadow', 'a/../../b', '/boot/./x', '//x', 'vmlinuz-6.1', '.', '..', '', ' ');
const keyLine = (keys: string[]) => fc.tuple(fc.constantFrom(...keys), pathish, fc.string({ maxLength: 8 })).map(([k, p, extra]) => `${k} ${p}${extra}`);
const blsText = fc.array(keyLine(['title', 'linux', 'initrd', 'options', 'version', 'efi', 'architecture', 'sort-key']), { maxLength: 12 }).map((l) => l.join('\n'));
const syslinuxText = fc.array(keyLine(['LABEL', 'LINUX', 'KERNEL', 'INITRD', 'APPEND', 'DEFAULT', 'MENU LABEL', 'MENU DEFAULT', 'INCLUDE']), { maxLength: 12 }).map((l) => l.join('\n'));
const overrideText = fc.tuple(pathish, fc.array(pathish, { maxLength: 3 }), fc.string({ maxLength: 20 })).map(([kernel, initrds, cmdline]) => JSON.stringify({ kernel, initrds, cmdline }));

test('BootLoaderSpec, loader.conf, syslinux, override, os-release and kernel-pair parsers never throw, and their entries stay inside the partition', () => {
  fc.assert(
    fc.property(fc.string(), fc.oneof(fc.string(), blsText, syslinuxText, overrideText), (name, text) => {
      const bls = parseBlsEntry(`${name}.conf`, text, { grubEnv: new Map([['kernelopts', text]]) });
      assertSane({ candidates: bls.entry ? [bls.entry.candidate] : [], skipped: bls.skipped ? [bls.skipped] : [], notes: bls.notes }, 'bls');
      parseLoaderConf(text);
      assertSane(parseSyslinux(text, { path: `/${name}/extlinux.conf`, readFile: () => text }), 'syslinux');
      assertSane(parseOverride(text), 'override');
      parseOsRelease(text);
      assertSane(findKernelPairs('/', text.split(/\s+/)), 'kernel-pair');
      globMatch(name, text);
    }),
    { numRuns: RUNS },
  );
});

test('version comparison is antisymmetric and never throws', () => {
  const v = fc.stringMatching(/^[0-9a-z.~^\-_+]{0,12}$/);
  fc.assert(
    fc.property(v, v, (a, b) => {
      assert.equal(compareVersions(a, b), -compareVersions(b, a) || 0);
      assert.equal(compareVersions(a, a), 0);
    }),
    { numRuns: 2000 },
  );
});

/** A minimal valid PE header with the given sections, for mutation. */
function peWith(sections: { name: string; offset: number; size: number }[], fileSize: number): Uint8Array {
  const b = Buffer.alloc(Math.max(1024, fileSize));
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x80, 0x3c);
  b.write('PE\0\0', 0x80, 'latin1');
  b.writeUInt16LE(0x8664, 0x84);
  b.writeUInt16LE(sections.length, 0x86);
  b.writeUInt16LE(0xf0, 0x94);
  let at = 0x84 + 20 + 0xf0;
  for (const s of sections) {
    b.write(s.name, at, 'latin1');
    b.writeUInt32LE(s.size, at + 8);
    b.writeUInt32LE(0x1000, at + 12);
    b.writeUInt32LE(s.size, at + 16);
    b.writeUInt32LE(s.offset, at + 20);
    at += 40;
  }
  return b;
}

test('the PE reader returns sections or a reason for any bytes, and never points outside the file', () => {
  const good = peWith([{ name: '.osrel', offset: 0x400, size: 16 }, { name: '.linux', offset: 0x410, size: 32 }], 2048);
  const ok = decodePeHeader(good);
  assert.equal(ok.ok, true);
  fc.assert(
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 2048 }), fc.tuple(fc.nat(2047), fc.integer({ min: 0, max: 255 }), fc.nat(1)).map(([i, v, twice]) => {
      const copy = Uint8Array.from(good);
      copy[i] = v;
      if (twice) copy[(i * 7) % copy.length] = v ^ 0xff;
      return copy;
    })), (bytes) => {
      const r = decodePeHeader(bytes, bytes.length);
      if (r.ok) {
        const texts = new Map([['.osrel', Buffer.from('ID=x\n')]]);
        const u = ukiCandidate('/EFI/Linux/x.efi', r.image, bytes.length, texts);
        const c = u.uki?.candidate;
        for (const ref of c ? [c.kernel, ...c.initrds] : []) assert.ok(ref.section!.offset + ref.section!.length <= bytes.length);
      } else assert.equal(typeof r.error, 'string');
    }),
    { numRuns: 1000 },
  );
});

test('partition tables and file system probes never throw on arbitrary disks', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ minLength: 0, maxLength: 20000 }), fc.boolean(), async (disk, mbr) => {
      const d = Uint8Array.from(disk);
      if (mbr && d.length >= 512) {
        d[510] = 0x55;
        d[511] = 0xaa;
      }
      const readAt = async (o: number, l: number) => d.subarray(Math.min(o, d.length), Math.min(o + l, d.length));
      const t = await readPartitionTable(readAt, d.length);
      for (const p of t?.partitions ?? []) assert.ok(p.offset + p.size <= d.length);
      probeFilesystem(d);
    }),
    { numRuns: 500 },
  );
});

test('a small file that is no disk has no partition table (not a "corrupt GPT")', async () => {
  const d = Buffer.from('laptop\n');
  const readAt = async (o: number, l: number) => d.subarray(Math.min(o, d.length), Math.min(o + l, d.length));
  assert.equal(await readPartitionTable(readAt, d.length), null);
});
