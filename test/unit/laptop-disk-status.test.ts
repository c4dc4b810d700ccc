// The laptop's console line while a desktop uses its disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diskStatusLine, formatElapsed, watchDiskStatus } from '../../src/laptop/disk-status';
import { formatBinaryBytes } from '../../src/progress';

test('sizes and durations as a person reads them', () => {
  assert.equal(formatBinaryBytes(0), '0 B');
  assert.equal(formatBinaryBytes(1023), '1023 B');
  assert.equal(formatBinaryBytes(1536), '1.5 KiB');
  assert.equal(formatBinaryBytes(340 * 2 ** 20), '340.0 MiB');
  assert.equal(formatBinaryBytes(1.25 * 2 ** 30), '1.3 GiB');
  assert.equal(formatElapsed(45_000), '45 s');
  assert.equal(formatElapsed(12 * 60_000 + 5_000), '12 min');
  assert.equal(formatElapsed(185 * 60_000), '3 h 5 min');
});

test('the status line: who, how long, how much in all and in the last minute', () => {
  assert.equal(
    diskStatusLine({ peer: 'fd12::2', forMs: 125_000, total: { bytesRead: 3 * 2 ** 30, bytesWritten: 2 ** 20 }, lastMinute: { bytesRead: 2 ** 20, bytesWritten: 0 } }),
    'serving the disk to the desktop at fd12::2 for 2 min: read 3.0 GiB, written 1.0 MiB (last minute: 1.0 MiB read, 0 B written)',
  );
});

test('the watcher prints only while a desktop holds the disk, with what moved since the last line', () => {
  const printed: string[] = [];
  let traffic = { bytesRead: 0, bytesWritten: 0 };
  let holder: { peer: string; since: number } | undefined;
  let now = 0;
  const ac = new AbortController();
  const w = watchDiskStatus({ traffic: () => traffic, holder: () => holder, print: (l) => printed.push(l), intervalMs: 3_600_000, now: () => now }, { signal: ac.signal });
  w.tick(); // nobody yet
  holder = { peer: 'fd12::2', since: 0 };
  traffic = { bytesRead: 2048, bytesWritten: 0 };
  now = 60_000;
  w.tick();
  traffic = { bytesRead: 4096, bytesWritten: 1024 };
  now = 120_000;
  w.tick();
  holder = undefined;
  w.tick();
  ac.abort();
  assert.deepEqual(printed, [
    'serving the disk to the desktop at fd12::2 for 1 min: read 2.0 KiB, written 0 B (last minute: 2.0 KiB read, 0 B written)',
    'serving the disk to the desktop at fd12::2 for 2 min: read 4.0 KiB, written 1.0 KiB (last minute: 2.0 KiB read, 1.0 KiB written)',
  ]);
});
