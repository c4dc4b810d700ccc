import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { StiefelError } from '../../src/errors';
import { writeCompressed, type Compression } from '../../src/image/compress';
import { createProgressDisplay, REDRAW_PREVIOUS_LINE } from '../../src/image/progress';
import { formatBytes } from '../../src/image/summary';
import { requireTool } from '../helpers/tools';

test('progress on a terminal redraws one line; elsewhere one plain line per phase', () => {
  let t = 0;
  const tty: string[] = [];
  const d = createProgressDisplay({ line: (l) => tty.push(l), isTTY: true, now: () => t });
  d.update({ phase: 'kernel', message: 'reading' });
  d.update({ phase: 'pack', message: 'cpio, zstd', done: 10, total: 100 });
  t += 50;
  d.update({ phase: 'pack', message: 'cpio, zstd', done: 20, total: 100 }); // too soon: skipped
  t += 100;
  d.update({ phase: 'pack', message: 'cpio, zstd', done: 50, total: 100 });
  assert.deepEqual(tty, [
    'kernel: reading',
    `${REDRAW_PREVIOUS_LINE}pack: cpio, zstd 10%`,
    `${REDRAW_PREVIOUS_LINE}pack: cpio, zstd 50%`,
  ]);
  const plain: string[] = [];
  const p = createProgressDisplay({ line: (l) => plain.push(l), isTTY: false });
  for (let i = 0; i < 5; i++) p.update({ phase: 'read', message: 'reading 5 files', done: i, total: 5 });
  p.update({ phase: 'pack', message: 'cpio, gzip', done: 1, total: 2 });
  assert.deepEqual(plain, ['read: reading 5 files', 'pack: cpio, gzip']);
  assert.ok(plain.every((l) => !l.includes('\x1b')));
});

test('sizes are printed in binary units', () => {
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(49.5 * 1024 * 1024), '49.5 MiB');
});

test('zstd, gzip and none write what comes in, and the sha256 is of the file', async () => {
  requireTool('zstd');
  const dir = mkdtempSync(join(tmpdir(), 'stf5-compress-'));
  try {
    const chunks = [Buffer.from('hello '), randomBytes(300_000), Buffer.alloc(200_000, 7)];
    const whole = Buffer.concat(chunks);
    for (const method of ['zstd', 'gzip', 'none'] as Compression[]) {
      const out = join(dir, `x.${method}`);
      let reported = 0;
      const r = await writeCompressed(chunks, out, { method, level: 3, onProgress: (i) => (reported = i) });
      const file = readFileSync(out);
      assert.equal(r.bytesOut, file.length);
      assert.equal(r.bytesIn, whole.length);
      assert.equal(reported, whole.length);
      assert.equal(r.sha256, createHash('sha256').update(file).digest('hex'));
      const back =
        method === 'zstd' ? execFileSync('zstd', ['-dc', out]) : method === 'gzip' ? gunzipSync(file) : file;
      assert.ok(back.equals(whole), method);
      if (method !== 'none') assert.ok(file.length < whole.length, `${method} compresses`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing zstd program is one error naming its package', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf5-compress-'));
  try {
    await assert.rejects(writeCompressed([Buffer.from('x')], join(dir, 'x'), { method: 'zstd', zstd: '/nonexistent/stf5-zstd' }), (err: unknown) => {
      assert.ok(err instanceof StiefelError);
      assert.match(err.message, /is not installed: install 'zstd' \(Debian, Fedora, Arch\)/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
