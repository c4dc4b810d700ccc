import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeNewc, encodeNewc } from '../../src/cpio/newc';
import { ImageTree, ImageTreeError } from '../../src/image/image-tree';

test('a host path is mirrored with every symlink on the way', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf5-tree-'));
  try {
    // A merged-/usr layout in miniature: lib -> usr/lib, lib64/ld.so -> /…/lib/real/ld.so (absolute).
    mkdirSync(join(dir, 'usr/lib/real'), { recursive: true });
    mkdirSync(join(dir, 'usr/lib64'), { recursive: true });
    writeFileSync(join(dir, 'usr/lib/real/ld.so'), 'loader');
    symlinkSync('usr/lib', join(dir, 'lib'));
    symlinkSync('usr/lib64', join(dir, 'lib64'));
    symlinkSync(join(dir, 'lib/real/ld.so'), join(dir, 'usr/lib64/ld.so'));
    const tree = new ImageTree();
    const file = await tree.mirrorHostPath(join(dir, 'lib64/ld.so'), 'programs');
    const d = dir.slice(1);
    assert.equal(file, `${d}/usr/lib/real/ld.so`);
    assert.deepEqual(tree.get(`${d}/lib64`), { type: 'symlink', target: 'usr/lib64' });
    assert.deepEqual(tree.get(`${d}/lib`), { type: 'symlink', target: 'usr/lib' });
    assert.deepEqual(tree.get(`${d}/usr/lib64/ld.so`), { type: 'symlink', target: join(dir, 'lib/real/ld.so') });
    assert.equal(tree.resolve(`${d}/lib64/ld.so`, true), `${d}/usr/lib/real/ld.so`);
    // A file added later under the linked directory lands behind the link.
    assert.equal(tree.addFile(`${d}/lib/modules/x.ko`, { part: 'modules', data: Buffer.from('ko') }), `${d}/usr/lib/modules/x.ko`);
    assert.ok(tree.exists(`${d}/lib/modules/x.ko`));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same thing twice is fine, two different things at one path are not', () => {
  const tree = new ImageTree();
  tree.addSymlink('bin', 'usr/bin');
  tree.addSymlink('bin', 'usr/bin');
  assert.throws(() => tree.addSymlink('bin', 'elsewhere'), ImageTreeError);
  tree.addFile('usr/bin/a', { part: 'x', hostPath: '/usr/bin/a' });
  tree.addFile('bin/a', { part: 'x', hostPath: '/usr/bin/a' });
  assert.throws(() => tree.addFile('bin/a', { part: 'x', data: Buffer.from('other') }), ImageTreeError);
  assert.throws(() => tree.mkdir('usr/bin/a'), ImageTreeError);
  assert.throws(() => tree.addFile('../etc/passwd', { part: 'x', data: Buffer.alloc(0) }), ImageTreeError);
});

test('cpio entries carry modes, devices, links and data', () => {
  const tree = new ImageTree();
  tree.mkdir('tmp', 0o1777);
  tree.addDevice('dev/console', 'char', 5, 1);
  tree.addFile('etc/stiefelsystem/secret', { part: 'base', mode: 0o600, data: Buffer.from('s3cret') });
  tree.addFile('usr/bin/tool', { part: 'programs', mode: 0o755, hostPath: '/host/tool' });
  tree.addSymlink('bin', 'usr/bin');
  const entries = tree.toCpioEntries((p) => Buffer.from(`bytes of ${p}`));
  const decoded = decodeNewc(encodeNewc(entries)).entries;
  const get = (p: string) => decoded.find((e) => e.path === p)!;
  assert.equal(get('tmp').mode, 0o041777);
  assert.equal(get('dev/console').mode, 0o020600);
  assert.equal(get('dev/console').rdevmajor, 5);
  assert.equal(get('etc/stiefelsystem/secret').mode, 0o100600);
  assert.equal(get('usr/bin/tool').data.toString(), 'bytes of /host/tool');
  assert.equal(get('bin').data.toString(), 'usr/bin');
  assert.ok(get('etc/stiefelsystem'), 'parents are created');
  const sizes = tree.partSizes((_p, n) => (n.data ?? Buffer.alloc(10)).length);
  assert.deepEqual(Object.fromEntries(sizes), { base: 6, programs: 10 });
});
