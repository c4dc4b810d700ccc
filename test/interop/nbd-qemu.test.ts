// QEMU's NBD client (qemu-io, qemu-img) against `stiefelctl nbd-serve`:
// write, FUA write, zero, discard, flush and read patterns with
// verification, and a whole-image convert and compare.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';
import { makeSparseImage } from '../helpers/nbd-images';

const MiB = 1024 * 1024;

function qemuIo(uri: string, commands: string[]): string {
  const args = ['-f', 'raw', uri];
  for (const c of commands) args.push('-c', c);
  const out = execFileSync(requireTool('qemu-io'), args, { encoding: 'utf8', timeout: 60000 });
  // qemu-io reports a failed pattern check or I/O error in its output.
  assert.doesNotMatch(out, /failed|error|mismatch/i, out);
  return out;
}

test('qemu-io: write, FUA write, zero, discard, flush and verified reads', async () => {
  const { dir, cleanup } = tempDir('qemu');
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(32 * MiB, 0x11));
  const s = await serve(path);
  try {
    qemuIo(s.uri, [
      'write -P 0xa5 0 1M',
      'write -f -P 0x5a 1M 1M', // FUA
      'aio_write -P 0x01 4M 64k',
      'aio_write -P 0x02 5M 64k',
      'aio_write -P 0x03 6M 64k',
      'aio_flush',
      'write -z 8M 2M', // NBD_CMD_WRITE_ZEROES
      'write -z -u 12M 4M', // zeroes, holes allowed
      'discard 20M 4M', // NBD_CMD_TRIM
      'flush',
      'read -P 0xa5 0 1M',
      'read -P 0x5a 1M 1M',
      'read -P 0x01 4M 64k',
      'read -P 0x02 5M 64k',
      'read -P 0x03 6M 64k',
      'read -P 0x00 8M 2M',
      'read -P 0x00 12M 4M',
      'read -P 0x11 10M 2M',
      'read -P 0x11 31M 1M',
      'write -P 0x7e 32767k 1k', // the last KiB
      'read -P 0x7e 32767k 1k',
    ]);
    // Unaligned, odd sizes.
    qemuIo(s.uri, ['write -P 0x33 1000001 12345', 'read -P 0x33 1000001 12345', 'read -P 0xa5 1000000 1']);
    // Out of range: qemu refuses before sending, so check the server with a read at the very end.
    const info = execFileSync(requireTool('qemu-img'), ['info', '--output=json', s.uri], { encoding: 'utf8' });
    assert.equal(JSON.parse(info)['virtual-size'], 32 * MiB);
  } finally {
    const exit = await s.stop();
    if (exit.code !== 0) cleanup();
    assert.equal(exit.code, 0);
  }
  try {
    const bytes = readFileSync(path);
    assert.ok(bytes.subarray(0, 1000001).every((b) => b === 0xa5));
    assert.ok(bytes.subarray(MiB, 2 * MiB).every((b) => b === 0x5a));
    assert.ok(bytes.subarray(8 * MiB, 10 * MiB).every((b) => b === 0));
    assert.ok(bytes.subarray(1000001, 1000001 + 12345).every((b) => b === 0x33));
  } finally {
    cleanup();
  }
});

test('qemu-img convert to qcow2 and back, and compare', async () => {
  const qemuImg = requireTool('qemu-img');
  const { dir, cleanup } = tempDir('qemu');
  const src = join(dir, 'src.img');
  const disk = join(dir, 'disk.img');
  makeSparseImage(src, 24, 11);
  writeFileSync(disk, Buffer.alloc(24 * MiB, 0x99));
  const s = await serve(disk);
  try {
    execFileSync(qemuImg, ['convert', '-n', '-f', 'raw', '-O', 'raw', src, s.uri], { timeout: 120000 });
    execFileSync(qemuImg, ['convert', '-f', 'raw', '-O', 'qcow2', s.uri, join(dir, 'copy.qcow2')], { timeout: 120000 });
    const cmp = execFileSync(qemuImg, ['compare', '-f', 'raw', '-F', 'qcow2', src, join(dir, 'copy.qcow2')], { encoding: 'utf8' });
    assert.match(cmp, /Images are identical/);
    const cmp2 = execFileSync(qemuImg, ['compare', '-f', 'raw', '-F', 'raw', src, s.uri], { encoding: 'utf8' });
    assert.match(cmp2, /Images are identical/);
  } finally {
    await s.stop();
    cleanup();
  }
});
