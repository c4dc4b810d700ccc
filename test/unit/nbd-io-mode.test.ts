import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IoModePolicy } from '../../src/nbd/io-mode';

const opts = { syncMax: 1024 * 1024, syncWriteMax: 65536, window: 64, slowLimit: 8, asyncMs: 1000 };

test('page-cache-fast calls stay synchronous; large calls never are', () => {
  const p = new IoModePolicy(opts);
  for (let i = 0; i < 1000; i++) {
    assert.equal(p.sync(4096, i), true);
    assert.equal(p.took(0.003, 4096, i), false);
  }
  assert.equal(p.sync(1024 * 1024 + 1, 0), false);
  assert.equal(p.sync(65536, 0, true), true);
  assert.equal(p.sync(65537, 0, true), false);
});

test('a few slow calls (a busy scheduler) do not switch; a slow disk does, for a while', () => {
  const p = new IoModePolicy(opts);
  // 7 slow calls in every window of 64: noise.
  for (let i = 0; i < 640; i++) assert.equal(p.took(i % 64 < 7 ? 0.5 : 0.003, 4096, i), false);
  assert.equal(p.sync(4096, 700), true);
  // A disk: every 4 KiB call takes 100 us; the 8th switches to the thread pool.
  let switched = -1;
  for (let i = 0; i < 8; i++) if (p.took(0.1, 4096, 1000)) switched = i;
  assert.equal(switched, 7);
  assert.equal(p.sync(4096, 1500), false);
  assert.equal(p.sync(4096, 1999), false);
  // After the pause it tries again.
  assert.equal(p.sync(4096, 2000), true);
  assert.equal(p.asyncUntil, 0);
});

test('what counts as slow grows with the size: 256 KiB in 200 us is memory speed', () => {
  const p = new IoModePolicy({ ...opts, slowLimit: 1 });
  assert.equal(p.took(0.2, 256 * 1024, 0), false);
  assert.equal(p.took(0.4, 256 * 1024, 0), true);
});
