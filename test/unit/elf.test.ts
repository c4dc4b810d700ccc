import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { ElfError, ELFCLASS32, ELFCLASS64, ELFDATA2MSB, readElfDynamic, readElfHeader, readElfSection } from '../../src/elf/elf';
import { modinfoFirmware } from '../../src/kmod/depmod-files';
import { requireTool } from '../helpers/tools';
import { makeElf } from './fixtures/make-elf';
import { debianKernel, hostModulePath } from '../helpers/kernel';

const KMOD_DIR = debianKernel().modulesDir;

/** What binutils' readelf says about a file's dynamic section and interpreter. */
function readelf(path: string): { interpreter?: string; needed: string[]; soname?: string; runpath: string[]; rpath: string[] } {
  const dyn = execFileSync('readelf', ['-d', '-W', path], { encoding: 'utf8' });
  const field = (kind: string): string[] =>
    [...dyn.matchAll(new RegExp(`\\(${kind}\\)\\s+[^[]*\\[([^\\]]*)\\]`, 'g'))].map((m) => m[1]!);
  const prog = execFileSync('readelf', ['-l', '-W', path], { encoding: 'utf8' });
  const interp = /\[Requesting program interpreter: ([^\]]+)\]/.exec(prog)?.[1];
  return {
    interpreter: interp,
    needed: field('NEEDED'),
    soname: field('SONAME')[0],
    runpath: field('RUNPATH').flatMap((s) => s.split(':')),
    rpath: field('RPATH').flatMap((s) => s.split(':')),
  };
}

function which(name: string): string {
  return requireTool(name);
}

test('interpreter, DT_NEEDED, SONAME and RUNPATH of real binaries match readelf', () => {
  requireTool('readelf');
  const files = [
    process.execPath,
    which('kexec'),
    which('ip'),
    which('wg'),
    which('cryptsetup'),
    which('lvm'),
    which('busybox'), // static: no interpreter, nothing needed
    '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib/x86_64-linux-gnu/libcryptsetup.so.12',
  ];
  for (const f of files) {
    const ours = readElfDynamic(readFileSync(f));
    const theirs = readelf(f);
    assert.equal(ours.interpreter, theirs.interpreter, `${f}: interpreter`);
    assert.deepEqual(ours.needed, theirs.needed, `${f}: DT_NEEDED`);
    assert.equal(ours.soname, theirs.soname, `${f}: DT_SONAME`);
    assert.deepEqual(ours.runpath, theirs.runpath, `${f}: DT_RUNPATH`);
    assert.deepEqual(ours.rpath, theirs.rpath, `${f}: DT_RPATH`);
    assert.equal(ours.elfClass, ELFCLASS64);
    assert.equal(ours.machine, 62);
  }
  // Make sure the comparison covered something: node needs libstdc++, busybox nothing.
  assert.ok(readElfDynamic(readFileSync(process.execPath)).needed.includes('libstdc++.so.6'));
  assert.deepEqual(readElfDynamic(readFileSync(which('busybox'))).needed, []);
});

test('a kernel module’s .modinfo firmware list matches modinfo -F firmware', () => {
  requireTool('modinfo');
  for (const rel of ['r8169', 'virtio_net', 'e100'].map((name) => hostModulePath(name))) {
    const path = `${KMOD_DIR}/${rel}`;
    const section = readElfSection(readFileSync(path), '.modinfo');
    assert.ok(section, `${rel} has a .modinfo section`);
    const theirs = execFileSync('modinfo', ['-F', 'firmware', path], { encoding: 'utf8' }).split('\n').filter(Boolean);
    assert.deepEqual(modinfoFirmware(section), theirs, rel);
  }
  assert.ok(modinfoFirmware(readElfSection(readFileSync(`${KMOD_DIR}/${hostModulePath('r8169')}`), '.modinfo')!).length > 5);
});

test('32-bit and big-endian files, RPATH and RUNPATH', () => {
  for (const elfClass of [32, 64] as const) {
    for (const littleEndian of [true, false]) {
      const bytes = makeElf({
        elfClass,
        littleEndian,
        machine: 3,
        interpreter: '/lib/ld-linux.so.2',
        needed: ['libfoo.so.1', 'libbar.so.2'],
        soname: 'libself.so.0',
        rpath: '/opt/a:/opt/b',
        runpath: '$ORIGIN/../lib',
      });
      const info = readElfDynamic(bytes);
      assert.equal(info.elfClass, elfClass === 32 ? ELFCLASS32 : ELFCLASS64);
      if (!littleEndian) assert.equal(info.data, ELFDATA2MSB);
      assert.equal(info.machine, 3);
      assert.equal(info.interpreter, '/lib/ld-linux.so.2');
      assert.deepEqual(info.needed, ['libfoo.so.1', 'libbar.so.2']);
      assert.equal(info.soname, 'libself.so.0');
      assert.deepEqual(info.rpath, ['/opt/a', '/opt/b']);
      assert.deepEqual(info.runpath, ['$ORIGIN/../lib']);
    }
  }
});

test('named sections are found, absent ones are undefined', () => {
  const bytes = makeElf({ type: 1, sections: { '.text': Buffer.from([0x90, 0xc3]), '.modinfo': Buffer.from('license=GPL\0firmware=a/b.bin\0') } });
  assert.deepEqual(modinfoFirmware(readElfSection(bytes, '.modinfo')!), ['a/b.bin']);
  assert.deepEqual([...readElfSection(bytes, '.text')!], [0x90, 0xc3]);
  assert.equal(readElfSection(bytes, '.nothing'), undefined);
  assert.deepEqual(readElfDynamic(bytes).needed, []);
});

test('what is not ELF is refused with an ElfError', () => {
  assert.throws(() => readElfHeader(Buffer.from('#!/bin/sh\necho this is a script, long enough to have 52 bytes\n')), ElfError);
  assert.throws(() => readElfHeader(Buffer.alloc(10)), ElfError);
  const good = makeElf({ needed: ['libc.so.6'] });
  // A string table pointing outside the file.
  const truncated = good.subarray(0, good.length - 40);
  assert.throws(() => readElfDynamic(truncated), ElfError);
});

test('property: corrupted files give an ElfError or a result, never another exception', () => {
  const base = makeElf({ interpreter: '/lib64/ld-linux-x86-64.so.2', needed: ['libc.so.6', 'libm.so.6'], runpath: '$ORIGIN', sections: { '.modinfo': Buffer.from('firmware=x\0') } });
  fc.assert(
    fc.property(
      fc.array(fc.record({ at: fc.nat({ max: base.length - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }),
      fc.nat({ max: base.length }),
      (edits, cut) => {
        const b = Buffer.from(base.subarray(0, Math.max(cut, 1)));
        for (const e of edits) if (e.at < b.length) b[e.at] = e.value;
        for (const read of [readElfDynamic, (x: Buffer) => readElfSection(x, '.modinfo')]) {
          try {
            read(b);
          } catch (err) {
            if (!(err instanceof ElfError)) throw err;
          }
        }
      },
    ),
    { numRuns: 2000 },
  );
});
