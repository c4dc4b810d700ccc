import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { BzImageError, readBzImageInfo } from '../../src/image/bzimage';
import { requireTool } from '../helpers/tools';
import { debianKernel } from '../helpers/kernel';

const { path: KERNEL, release: RELEASE } = debianKernel();

test('the release in the real bzImage header matches its file name and file(1)', () => {
  requireTool('file');
  const info = readBzImageInfo(readFileSync(KERNEL).subarray(0, 65536));
  assert.equal(info.release, RELEASE);
  const described = execFileSync('file', ['-b', KERNEL], { encoding: 'utf8' });
  assert.ok(described.includes(`version ${info.versionString}`), described);
  assert.match(info.protocol, /^2\.\d+$/);
});

function header(version: string, pointer = 0x100): Buffer {
  const b = Buffer.alloc(0x1000);
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt16LE(pointer, 0x20e);
  if (pointer !== 0) b.write(`${version}\0`, pointer + 0x200, 'latin1');
  return b;
}

test('the version string is read where kernel_version points, plus 0x200', () => {
  const info = readBzImageInfo(header('6.12.9-arch1-1 (linux@archlinux) #1 SMP PREEMPT_DYNAMIC'));
  assert.equal(info.release, '6.12.9-arch1-1');
  assert.equal(info.protocol, '2.15');
});

test('what is not a bzImage is a BzImageError', () => {
  assert.throws(() => readBzImageInfo(Buffer.alloc(100)), BzImageError);
  const noMagic = header('6.1.0');
  noMagic.write('XXXX', 0x202, 'latin1');
  assert.throws(() => readBzImageInfo(noMagic), /HdrS/);
  assert.throws(() => readBzImageInfo(header('6.1.0', 0)), /no kernel version string/);
  assert.throws(() => readBzImageInfo(header('not a release', 0x100)), BzImageError);
  const unterminated = header('6.1.0');
  unterminated.fill(0x41, 0x300);
  assert.throws(() => readBzImageInfo(unterminated), /NUL/);
});
