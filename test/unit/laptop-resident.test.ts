// The laptop watch keeps its own mapped files in the page cache (src/laptop/resident.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mappedFiles, readIntoPageCache } from '../../src/laptop/resident';

test('mappedFiles: each file-backed mapping once, not anonymous, special or deleted ones', () => {
  const maps = [
    '55d0c0000000-55d0c0100000 r--p 00000000 fe:01 1311   /usr/bin/node',
    '55d0c0100000-55d0c2000000 r-xp 00100000 fe:01 1311   /usr/bin/node',
    '7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ',
    '7f1000000000-7f1000022000 r--p 00000000 fe:01 2001   /usr/lib/x86_64-linux-gnu/libc.so.6',
    '7f2000000000-7f2000001000 rw-s 00000000 00:05 77     /dev/zero (deleted)',
    '7f3000000000-7f3000001000 r--p 00000000 00:1a 88     /tmp/gone (deleted)',
    '7f4000000000-7f4000001000 rw-s 00000000 00:01 99     /memfd:v8 (deleted)',
    '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0      [stack]',
    '7ffd10000000-7ffd10002000 r-xp 00000000 00:00 0      [vdso]',
    '7f5000000000-7f5000001000 r--p 00000000 fe:01 3003   /usr/share/a b/with space.dat',
  ].join('\n');
  assert.deepEqual(mappedFiles(maps), ['/usr/bin/node', '/usr/lib/x86_64-linux-gnu/libc.so.6', '/usr/share/a b/with space.dat']);
});

test("mappedFiles on this process's own maps names the running node", () => {
  const files = mappedFiles(readFileSync('/proc/self/maps', 'utf8'));
  assert.ok(files.includes(process.execPath), files.join('\n'));
});

test('readIntoPageCache reads each file whole and says which it could not', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf-resident-'));
  try {
    writeFileSync(join(dir, 'a'), Buffer.alloc(3 * 1024 * 1024 + 5));
    writeFileSync(join(dir, 'b'), 'x');
    const r = readIntoPageCache([join(dir, 'a'), join(dir, 'b'), join(dir, 'missing')]);
    assert.equal(r.files, 2);
    assert.equal(r.bytes, 3 * 1024 * 1024 + 6);
    assert.equal(r.failed.length, 1);
    assert.match(r.failed[0]!, /missing: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
