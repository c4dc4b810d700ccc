// nbdinfo (libnbd) against `stiefelctl nbd-serve`: size, flags, the export
// list, and the allocation map of a sparse file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';

const MiB = 1024 * 1024;

function nbdinfo(args: string[]): string {
  return execFileSync(requireTool('nbdinfo'), args, { encoding: 'utf8', timeout: 30000 });
}

test('nbdinfo: size, flags, block sizes, description (writable export)', async () => {
  const { dir, cleanup } = tempDir('nbdinfo');
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(3 * MiB, 1));
  const s = await serve(path, ['--name', 'mydisk']);
  try {
    const info = JSON.parse(nbdinfo(['--json', s.uri]));
    const e = info.exports[0];
    assert.equal(info.protocol, 'newstyle-fixed');
    assert.equal(e['export-name'], 'mydisk');
    assert.equal(e['export-size'], 3 * MiB);
    assert.match(e.description, /disk\.img/);
    assert.equal(e.is_read_only, false);
    for (const k of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_fast_zero', 'can_multi_conn', 'can_cache', 'can_df']) assert.equal(e[k], true, k);
    assert.equal(e.block_size_minimum, 1);
    assert.equal(e.block_size_preferred, 4096);
    assert.equal(e.block_size_maximum, 32 * MiB);
    assert.deepEqual(e.contexts, ['base:allocation']);
    // The empty name reaches the same export.
    assert.equal(JSON.parse(nbdinfo(['--json', s.uri.replace(/\/mydisk$/, '/')])).exports[0]['export-size'], 3 * MiB);
  } finally {
    const exit = await s.stop();
    cleanup();
    assert.equal(exit.code, 0);
  }
});

test('nbdinfo: --read-only shows in the flags', async () => {
  const { dir, cleanup } = tempDir('nbdinfo');
  const path = join(dir, 'ro.img');
  writeFileSync(path, Buffer.alloc(MiB));
  const s = await serve(path, ['--read-only']);
  try {
    const e = JSON.parse(nbdinfo(['--json', s.uri])).exports[0];
    assert.equal(e.is_read_only, true);
    assert.equal(e.can_trim, false);
    assert.equal(e.can_zero, false);
  } finally {
    await s.stop();
    cleanup();
  }
});

test('nbdinfo --list shows the export; --map shows holes and data of a sparse file', async () => {
  requireTool('filefrag');
  const { dir, cleanup } = tempDir('nbdinfo');
  const path = join(dir, 'sparse.img');
  writeFileSync(path, '');
  truncateSync(path, 64 * MiB);
  const fd = openSync(path, 'r+');
  writeSync(fd, Buffer.alloc(2 * MiB, 0xcd), 0, 2 * MiB, 8 * MiB);
  writeSync(fd, Buffer.alloc(4096, 0xcd), 0, 4096, 40 * MiB);
  closeSync(fd);
  const s = await serve(path, ['--name', 'sparse']);
  try {
    const list = nbdinfo(['--list', '--json', s.uri]);
    assert.deepEqual(JSON.parse(list).exports.map((e: { 'export-name': string }) => e['export-name']), ['sparse']);
    const map = JSON.parse(nbdinfo(['--map', '--json', s.uri])) as Array<{ offset: number; length: number; type: number }>;
    assert.deepEqual(
      map.map((m) => [m.offset, m.length, m.type]),
      [
        [0, 8 * MiB, 3],
        [8 * MiB, 2 * MiB, 0],
        [10 * MiB, 30 * MiB, 3],
        [40 * MiB, 4096, 0],
        [40 * MiB + 4096, 24 * MiB - 4096, 3],
      ],
    );
    const total = nbdinfo(['--map', '--totals', s.uri]);
    assert.match(total, /^\s*2101248\s+3\.1%\s+0 data$/m);
  } finally {
    await s.stop();
    cleanup();
  }
});

test('nbdinfo over IPv6 loopback and over a unix socket', async () => {
  const { dir, cleanup } = tempDir('nbdinfo');
  const path = join(dir, 'd.img');
  writeFileSync(path, Buffer.alloc(MiB));
  const v6 = await serve(path, [], { listen: '[::1]:0' });
  const unix = await serve(path, ['--name', 'u'], { listen: `unix:${join(dir, 'nbd.sock')}` });
  try {
    assert.match(v6.uri, /^nbd:\/\/\[::1\]:\d+\//);
    assert.equal(JSON.parse(nbdinfo(['--json', v6.uri])).exports[0]['export-size'], MiB);
    assert.match(unix.uri, /^nbd\+unix:\/\/\/u\?socket=/);
    assert.equal(JSON.parse(nbdinfo(['--json', unix.uri])).exports[0]['export-size'], MiB);
  } finally {
    await v6.stop();
    await unix.stop();
    cleanup();
  }
});
