// nbdcopy (libnbd) both ways through `stiefelctl nbd-serve`, checked with
// SHA-256; nbdcopy uses several connections because the server advertises
// NBD_FLAG_CAN_MULTI_CONN.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';
import { makeSparseImage, sha256 } from '../helpers/nbd-images';

const MiB = 1024 * 1024;

test('nbdcopy file -> server -> file keeps every byte, over several connections', async () => {
  const nbdcopy = requireTool('nbdcopy');
  const { dir, cleanup } = tempDir('nbdcopy');
  const src = join(dir, 'src.img');
  const disk = join(dir, 'disk.img');
  const out = join(dir, 'out.img');
  makeSparseImage(src, 48, 7);
  writeFileSync(disk, '');
  truncateSync(disk, 48 * MiB);
  // A destination full of old bytes, so zeroing must really happen.
  writeFileSync(disk, Buffer.alloc(48 * MiB, 0x77));
  try {
    const s = await serve(disk);
    try {
      execFileSync(nbdcopy, ['--flush', src, s.uri], { timeout: 120000 });
      execFileSync(nbdcopy, [s.uri, out], { timeout: 120000 });
      assert.equal(sha256(out), sha256(src));
    } finally {
      assert.equal((await s.stop()).code, 0);
    }
    // nbdcopy runs min(4, CPUs) connections per side when multi-conn is allowed.
    const connections = (s.stderr().match(/ connected$/gm) ?? []).length;
    assert.ok(connections >= 4, `the two copies used ${connections} connections`);
    assert.equal(sha256(disk), sha256(src));
    assert.equal(statSync(disk).size, 48 * MiB);
  } finally {
    cleanup();
  }
});

test('nbdcopy from a read-only export, and a refused write to it', async () => {
  const nbdcopy = requireTool('nbdcopy');
  const { dir, cleanup } = tempDir('nbdcopy');
  const src = join(dir, 'ro.img');
  const out = join(dir, 'out.img');
  makeSparseImage(src, 16, 3);
  const before = sha256(src);
  const s = await serve(src, ['--read-only']);
  try {
    execFileSync(nbdcopy, [s.uri, out], { timeout: 60000 });
    assert.equal(sha256(out), before);
    assert.throws(() => execFileSync(nbdcopy, [out, s.uri], { timeout: 60000, stdio: 'pipe' }), /read.only|Operation not permitted|EPERM/i);
    assert.equal(sha256(src), before);
  } finally {
    await s.stop();
    cleanup();
  }
});
