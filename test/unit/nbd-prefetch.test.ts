// NBD_CMD_CACHE's background reading: bounded work whatever a client asks
// (merged ranges, a cap on what waits, no second read of a range just read),
// and the range set it keeps, checked against a byte map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Prefetcher } from '../../src/nbd/prefetch';
import { RangeSet } from '../../src/nbd/range-set';

const MiB = 1024 * 1024;

test('property: a range set holds exactly the union of what was added, merged', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 0, max: 40 })), { maxLength: 40 }), (adds) => {
      const set = new RangeSet();
      const bytes = new Uint8Array(256);
      for (const [start, len] of adds) {
        set.add(start, start + len);
        bytes.fill(1, start, start + len);
      }
      for (let a = 0; a < 256; a += 7) {
        for (let b = a; b <= 256; b += 5) assert.equal(set.covers(a, b), bytes.subarray(a, b).every((x) => x === 1), `covers(${a}, ${b})`);
      }
      // Sorted, disjoint, not touching: each range is a maximal run of the map.
      const ranges: Array<[number, number]> = [];
      for (let r = set.shift(); r; r = set.shift()) ranges.push(r);
      const runs: Array<[number, number]> = [];
      for (let i = 0; i < 256; i++) {
        if (!bytes[i]) continue;
        let j = i;
        while (j < 256 && bytes[j]) j++;
        runs.push([i, j]);
        i = j;
      }
      assert.deepEqual(ranges, runs);
    }),
    { numRuns: 500 },
  );
});

function fakeReader(): { read: (buf: Buffer, pos: number) => Promise<void>; reads: Array<[number, number]>; bytes: () => number } {
  const reads: Array<[number, number]> = [];
  return {
    read: async (buf, pos) => {
      reads.push([pos, buf.length]);
      await new Promise((r) => setImmediate(r));
    },
    reads,
    bytes: () => reads.reduce((n, [, l]) => n + l, 0),
  };
}

test('500 requests for the same 64 MiB read it once, through one small buffer', async () => {
  const r = fakeReader();
  const p = new Prefetcher(r.read, { chunk: 256 * 1024, maxQueued: 16, recentMs: 2000 });
  for (let i = 0; i < 500; i++) p.request(0, 64 * MiB);
  await p.idle();
  assert.equal(r.bytes(), 64 * MiB);
  assert.ok(r.reads.every(([, len]) => len <= 256 * 1024));
  // Asked again at once: nothing more is read.
  p.request(MiB, 8 * MiB);
  await p.idle();
  assert.equal(r.bytes(), 64 * MiB);
});

test('waiting ranges merge; beyond the cap further requests are dropped; after a while a range is read again', async () => {
  let now = 0;
  const r = fakeReader();
  const p = new Prefetcher(r.read, { chunk: MiB, maxQueued: 2, recentMs: 1000 }, () => now);
  p.request(0, MiB); // starts at once
  p.request(10 * MiB, MiB);
  p.request(11 * MiB, MiB); // touches the previous one: merged
  p.request(20 * MiB, MiB);
  p.request(30 * MiB, MiB); // two ranges wait already: dropped
  await p.idle();
  assert.deepEqual(
    r.reads.map(([pos]) => pos / MiB),
    [0, 10, 11, 20],
  );
  now += 1500;
  p.request(0, MiB);
  await p.idle();
  assert.deepEqual(r.reads.at(-1), [0, MiB]);
});

test('a failed read ends only its range; stop() waits for the read in progress and reads nothing more', async () => {
  const reads: number[] = [];
  let release!: () => void;
  const gate = new Promise<void>((res) => (release = res));
  const p = new Prefetcher(
    async (buf, pos) => {
      reads.push(pos);
      if (pos === 0) throw new Error('EIO');
      if (pos === 4 * MiB) await gate;
    },
    { chunk: MiB, maxQueued: 16, recentMs: 2000 },
  );
  p.request(0, 2 * MiB);
  p.request(4 * MiB, 4 * MiB);
  await new Promise((res) => setTimeout(res, 10));
  assert.deepEqual(reads, [0, 4 * MiB]);
  let stopped = false;
  const stopping = p.stop().then(() => (stopped = true));
  await new Promise((res) => setTimeout(res, 10));
  assert.equal(stopped, false, 'waits for the read in progress');
  release();
  await stopping;
  p.request(0, MiB);
  await p.idle();
  assert.deepEqual(reads, [0, 4 * MiB]);
});
