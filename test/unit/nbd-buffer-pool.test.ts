import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../src/nbd/buffer-pool';

test('a 256 KiB read with its header fits a 256 KiB + headroom buffer, and buffers are reused', () => {
  const pool = new BufferPool({ maxPooledBytes: 8 * 1024 * 1024 });
  const a = pool.take(256 * 1024 + 28);
  assert.equal(a.length, 256 * 1024 + 28);
  assert.ok(a.buffer.byteLength < 257 * 1024);
  pool.give(a);
  const b = pool.take(256 * 1024 + 16);
  assert.equal(b.buffer, a.buffer);
  assert.equal(pool.allocations, 1);
  const small = pool.take(16 + 4096);
  assert.equal(small.length, 4112);
  assert.equal(pool.allocations, 2);
});

test('idle buffers are capped; foreign buffers are ignored', () => {
  const pool = new BufferPool({ maxPooledBytes: 300 * 1024 });
  const bufs = [pool.take(256 * 1024), pool.take(256 * 1024)];
  for (const b of bufs) pool.give(b);
  assert.ok(pool.idleBytes <= 300 * 1024);
  pool.give(Buffer.alloc(8192));
  assert.ok(pool.idleBytes <= 300 * 1024);
});
