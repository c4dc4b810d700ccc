import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { CpioError, decodeNewc, encodeNewc, type CpioEntry } from '../../src/cpio/newc';
import { requireTool } from '../helpers/tools';

test('one file gives exactly the bytes of the newc format', () => {
  const bytes = encodeNewc([{ type: 'file', path: 'a', data: Buffer.from('hi\n'), mode: 0o644 }], { mtime: 0x5f5e100 });
  const expected =
    '070701' + '00000001' + '000081a4' + '00000000' + '00000000' + '00000001' + '05f5e100' + '00000003' +
    '00000000' + '00000000' + '00000000' + '00000000' + '00000002' + '00000000' + 'a\0' + '' /* 112 % 4 = 0 */ +
    'hi\n\0' +
    '070701' + '00000000' + '00000000' + '00000000' + '00000000' + '00000001' + '00000000' + '00000000' +
    '00000000' + '00000000' + '00000000' + '00000000' + '0000000b' + '00000000' + 'TRAILER!!!\0' + '\0\0\0';
  assert.equal(bytes.toString('latin1'), expected);
});

const sample: CpioEntry[] = [
  { type: 'file', path: 'bin/hello', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
  { type: 'dir', path: 'bin' },
  { type: 'symlink', path: 'sbin', target: 'bin' },
  { type: 'dir', path: 'dev' },
  { type: 'char', path: 'dev/console', major: 5, minor: 1 },
  { type: 'file', path: 'etc/empty', data: Buffer.alloc(0) },
  { type: 'dir', path: 'etc' },
];

test('entries are sorted so that directories precede their contents', () => {
  const { entries } = decodeNewc(encodeNewc(sample));
  assert.deepEqual(
    entries.map((e) => e.path),
    ['bin', 'bin/hello', 'dev', 'dev/console', 'etc', 'etc/empty', 'sbin'],
  );
  assert.deepEqual(entries.map((e) => e.ino), [1, 2, 3, 4, 5, 6, 7]);
});

test('the same entries in any order give the same bytes', () => {
  const a = encodeNewc(sample, { mtime: 1700000000 });
  const b = encodeNewc([...sample].reverse(), { mtime: 1700000000 });
  assert.ok(a.equals(b));
});

test('duplicate paths and escaping paths are refused', () => {
  assert.throws(() => encodeNewc([{ type: 'dir', path: 'a' }, { type: 'dir', path: '/a/' }]), CpioError);
  assert.throws(() => encodeNewc([{ type: 'dir', path: 'a/../../etc' }]), CpioError);
  assert.throws(() => encodeNewc([{ type: 'dir', path: '/' }]), CpioError);
});

test('GNU cpio lists and extracts what we write, byte for byte', () => {
  requireTool('cpio');
  const dir = mkdtempSync(join(tmpdir(), 'stiefel-cpio-'));
  try {
    // Device nodes need root to extract; leave them to the listing check.
    const files = sample.filter((e) => e.type !== 'char');
    const archive = join(dir, 'a.cpio');
    writeFileSync(archive, encodeNewc(sample, { mtime: 1700000000 }));
    const listing = execFileSync('cpio', ['-t', '--quiet', '-F', archive], { encoding: 'utf8' });
    assert.deepEqual(listing.trim().split('\n'), ['bin', 'bin/hello', 'dev', 'dev/console', 'etc', 'etc/empty', 'sbin']);
    const out = join(dir, 'out');
    writeFileSync(join(dir, 'files.cpio'), encodeNewc(files, { mtime: 1700000000 }));
    execFileSync('sh', ['-c', `mkdir ${out} && cd ${out} && cpio -idm --quiet -F ../files.cpio`]);
    assert.equal(readFileSync(join(out, 'bin/hello'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(statSync(join(out, 'bin/hello')).mode & 0o777, 0o755);
    assert.equal(statSync(join(out, 'bin/hello')).mtimeMs, 1700000000 * 1000);
    assert.equal(readFileSync(join(out, 'etc/empty')).length, 0);
    assert.equal(readlinkSync(join(out, 'sbin')), 'bin');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('what GNU cpio writes, we read', () => {
  requireTool('cpio');
  const dir = mkdtempSync(join(tmpdir(), 'stiefel-cpio-'));
  try {
    writeFileSync(join(dir, 'x'), 'twelve bytes');
    const archive = execFileSync('sh', ['-c', `cd ${dir} && printf 'x\\n' | cpio -o -H newc --quiet`]);
    const { entries, end } = decodeNewc(archive);
    assert.equal(entries.length, 1);
    assert.equal(entries[0]!.path, 'x');
    assert.equal(entries[0]!.data.toString(), 'twelve bytes');
    assert.ok(end <= archive.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('property: decode(encode(entries)) gives the entries back, and decode never throws anything but CpioError', () => {
  const name = fc.stringMatching(/^[a-z0-9._-]{1,12}$/).filter((s) => s !== '.' && s !== '..');
  const entry = fc.oneof(
    fc.record({ type: fc.constant('file' as const), path: name, data: fc.uint8Array({ maxLength: 70 }) }),
    fc.record({ type: fc.constant('dir' as const), path: name }),
    fc.record({ type: fc.constant('symlink' as const), path: name, target: name }),
  );
  fc.assert(
    fc.property(fc.uniqueArray(entry, { selector: (e) => e.path, maxLength: 8 }), (entries) => {
      const { entries: back } = decodeNewc(encodeNewc(entries));
      assert.equal(back.length, entries.length);
      for (const e of entries) {
        const d = back.find((x) => x.path === e.path)!;
        if (e.type === 'file') assert.deepEqual(new Uint8Array(d.data), e.data);
        if (e.type === 'symlink') assert.equal(d.data.toString(), e.target);
      }
    }),
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (junk) => {
      try {
        decodeNewc(junk);
      } catch (err) {
        assert.ok(err instanceof CpioError, String(err));
      }
    }),
  );
});
