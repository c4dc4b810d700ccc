// Crash consistency: writes through the server, FLUSH, kill -9 the server,
// start it again: every write completed before the flush is there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connectClient } from '../helpers/nbd-client';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';

const MiB = 1024 * 1024;

test('flushed writes survive kill -9 of the server', async () => {
  const { dir, cleanup } = tempDir('crash');
  try {
    await crashAndCheck(join(dir, 'disk.img'));
  } finally {
    cleanup();
  }
});

async function crashAndCheck(path: string): Promise<void> {
  writeFileSync(path, Buffer.alloc(16 * MiB));
  const s = await serve(path);
  try {
    const { client, socket } = await connectClient({ port: s.port });
    await client.handshake({ name: 'disk.img' });
    // 128 writes in flight at once, each with its own pattern, some FUA.
    const writes = Array.from({ length: 128 }, (_, i) => client.write(i * 65536 * 2, Buffer.alloc(65536, i + 1), i % 8 === 0 ? 1 : 0));
    const replies = await Promise.all(writes);
    assert.ok(replies.every((r) => r.error === 0));
    assert.equal((await client.flush()).error, 0);
    s.proc.kill('SIGKILL');
    const exit = await s.exited;
    assert.equal(exit.signal, 'SIGKILL');
    socket.destroy();
  } finally {
    await s.stop();
  }
  const again = await serve(path);
  try {
    const args = ['-f', 'raw', again.uri];
    for (let i = 0; i < 128; i += 17) args.push('-c', `read -P ${i + 1} ${i * 65536 * 2} 64k`);
    const out = execFileSync(requireTool('qemu-io'), args, { encoding: 'utf8' });
    assert.doesNotMatch(out, /failed/i, out);
    const { client, socket } = await connectClient({ port: again.port });
    await client.handshake();
    for (let i = 0; i < 128; i++) {
      const r = await client.read(i * 65536 * 2, 65536);
      assert.ok(r.data!.equals(Buffer.alloc(65536, i + 1)), `write ${i} lost`);
    }
    client.disconnect();
    await client.waitClosed();
    socket.destroy();
  } finally {
    await again.stop();
  }
  const bytes = readFileSync(path);
  assert.ok(bytes.subarray(0, 65536).every((b) => b === 1));
}
