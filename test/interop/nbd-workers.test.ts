// `stiefelctl nbd-serve --workers N`: the connections served in worker
// processes, seen through real clients (nbdcopy, nbdsh): every byte kept
// both ways, what one connection wrote and flushed is what another one's
// block status shows (the promise of NBD_FLAG_CAN_MULTI_CONN), a killed
// worker costs only its own connections, and Ctrl-C leaves no process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requireTool } from '../helpers/tools';
import { runCli } from '../helpers/cli';
import { serve, tempDir } from '../helpers/nbd-serve';
import { makeSparseImage, sha256 } from '../helpers/nbd-images';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** The processes a process started (Linux: /proc/PID/task/PID/children). */
function children(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('nbd-serve --workers 2: nbdcopy both ways keeps every byte; Ctrl-C stops the workers too', async () => {
  const nbdcopy = requireTool('nbdcopy');
  const { dir, cleanup } = tempDir('workers');
  const src = join(dir, 'src.img');
  const disk = join(dir, 'disk.img');
  const out = join(dir, 'out.img');
  makeSparseImage(src, 48, 11);
  writeFileSync(disk, Buffer.alloc(48 * MiB, 0x5a));
  try {
    const s = await serve(disk, ['--workers', '2']);
    const workers = children(s.proc.pid!);
    try {
      assert.equal(workers.length, 2, `worker processes: ${workers.join(' ')}`);
      execFileSync(nbdcopy, ['--flush', src, s.uri], { timeout: 120000 });
      execFileSync(nbdcopy, [s.uri, out], { timeout: 120000 });
      assert.equal(sha256(out), sha256(src));
    } finally {
      assert.equal((await s.stop()).code, 0, s.stderr());
    }
    assert.ok((s.stderr().match(/ connected$/gm) ?? []).length >= 4, s.stderr());
    assert.match(s.stderr(), /disconnected \(.*\); read .*, wrote /);
    assert.deepEqual(workers.filter(alive), [], 'a worker outlived the server');
    assert.equal(sha256(disk), sha256(src));
  } finally {
    cleanup();
  }
});

// Two handles of nbdsh on one server: the second is served by the other
// worker (each new connection goes to the least busy). Its extent map is
// taken before the first one writes; after the first one's flush it must
// show the data, well within the 2 s a map is otherwise kept.
const crossConnection = `
import nbd, os
uri = os.environ['NBD_URI']
def connect():
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(uri)
    return h
def flags_at(h, offset):
    seen = []
    def cb(ctx, off, entries, err):
        seen.extend(entries)
    h.block_status(65536, offset, cb)
    return seen[1]
h1 = connect()
h2 = connect()
assert h1.can_multi_conn()
before = flags_at(h2, 0)
h1.pwrite(b'x' * 65536, 0)
h1.flush()
after = flags_at(h2, 0)
print(before, after)
`;

test('nbd-serve --workers 2: a write flushed on one connection shows in the other connection\'s block status', async () => {
  const nbdsh = requireTool('nbdsh');
  const { dir, cleanup } = tempDir('workers');
  const disk = join(dir, 'sparse.img');
  writeFileSync(disk, '');
  truncateSync(disk, 16 * MiB);
  try {
    const s = await serve(disk, ['--workers', '2']);
    try {
      // nbdsh runs the first python3 on PATH; Debian's has the nbd module (python3-libnbd).
      const env = { ...process.env, NBD_URI: s.uri, PATH: `/usr/bin:${process.env.PATH ?? ''}` };
      const { stdout } = await run(nbdsh, ['-c', crossConnection], { timeout: 60000, env });
      // 3: hole and zero (nothing written yet); 0: data.
      assert.equal(stdout.trim(), '3 0', `block status before and after the other connection's flush: ${stdout}`);
    } finally {
      assert.equal((await s.stop()).code, 0, s.stderr());
    }
  } finally {
    cleanup();
  }
});

test('nbd-serve --workers 2: a killed worker ends only its own connections, and is replaced', async () => {
  const nbdinfo = requireTool('nbdinfo');
  const nbdcopy = requireTool('nbdcopy');
  const { dir, cleanup } = tempDir('workers');
  const disk = join(dir, 'disk.img');
  const out = join(dir, 'out.img');
  makeSparseImage(disk, 8, 5);
  try {
    const s = await serve(disk, ['--workers', '2']);
    try {
      const [first] = children(s.proc.pid!);
      assert.ok(first, 'no worker process');
      process.kill(first, 'SIGKILL');
      const deadline = Date.now() + 30000;
      while (!/an NBD worker process ended \(SIGKILL\) with 0 connection\(s\); starting another/.test(s.stderr())) {
        assert.ok(Date.now() < deadline, `no replacement announced: ${s.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      while (children(s.proc.pid!).length < 2) {
        assert.ok(Date.now() < deadline, 'the worker was not replaced');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(s.proc.exitCode, null, 'the server exited');
      await run(nbdinfo, [s.uri], { timeout: 30000 });
      execFileSync(nbdcopy, [s.uri, out], { timeout: 60000 });
      assert.equal(sha256(out), sha256(disk));
    } finally {
      assert.equal((await s.stop()).code, 0, s.stderr());
    }
  } finally {
    cleanup();
  }
});

test('nbd-serve --workers with a bad count: one line naming the range, nothing started', async () => {
  const { dir, cleanup } = tempDir('workers');
  try {
    const img = join(dir, 'd.img');
    writeFileSync(img, Buffer.alloc(MiB));
    for (const n of ['0', '65', 'two', '1.5']) {
      const r = await runCli(['nbd-serve', img, '--workers', n]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`--workers must be a whole number from 1 to 64, not '${n.replace('.', '\\.')}'`));
    }
  } finally {
    cleanup();
  }
});
