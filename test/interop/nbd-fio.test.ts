// fio's libnbd engine: random writes then verified reads (crc32c) on four
// jobs, each its own connection, in separate regions of one export.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';

const MiB = 1024 * 1024;

test('fio ioengine=nbd, 4 connections, randwrite with verify=crc32c', async () => {
  const fio = requireTool('fio');
  const { dir, cleanup } = tempDir('fio');
  const path = join(dir, 'disk.img');
  writeFileSync(path, Buffer.alloc(64 * MiB));
  const s = await serve(path);
  try {
    const out = execFileSync(
      fio,
      [
        '--name=verify',
        '--ioengine=nbd',
        `--uri=${s.uri}`,
        '--rw=randwrite',
        '--bsrange=4k-64k',
        '--iodepth=16',
        '--numjobs=4',
        '--size=16M',
        '--offset_increment=16M',
        '--verify=crc32c',
        '--do_verify=1',
        '--verify_fatal=1',
        '--group_reporting',
        '--output-format=json',
      ],
      // fio leaves verify state files in its working directory.
      { encoding: 'utf8', timeout: 180000, cwd: dir },
    );
    const result = JSON.parse(out.slice(out.indexOf('{')));
    const job = result.jobs[0];
    assert.equal(job.error, 0);
    assert.equal(job.write.io_bytes, 64 * MiB);
    // The verify phase read everything back.
    assert.ok(job.read.io_bytes >= 64 * MiB, `verified ${job.read.io_bytes} bytes`);
  } finally {
    const exit = await s.stop();
    cleanup();
    assert.equal(exit.code, 0);
  }
  // One connection per job (fio also opens some while setting up).
  assert.ok((s.stderr().match(/ connected$/gm) ?? []).length >= 4);
});
