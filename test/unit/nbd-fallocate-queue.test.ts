// The fallocate queue: never more runs at once than allowed, every caller
// answered with the outcome of a run that covered its range, ranges merged
// only where they overlap or touch (never across a gap).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FallocateQueue, type FallocateMode } from '../../src/nbd/fallocate-queue';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('300 adjacent trims at once: two runs at a time, merged into a handful', async () => {
  let running = 0;
  let maxRunning = 0;
  const runs: Array<[number, number]> = [];
  const q = new FallocateQueue(async (_mode, offset, length) => {
    maxRunning = Math.max(maxRunning, ++running);
    runs.push([offset, length]);
    await tick();
    running--;
    return true;
  }, 2);
  const results = await Promise.all(Array.from({ length: 300 }, (_, i) => q.submit('--punch-hole', i * 65536, 65536)));
  assert.ok(results.every((ok) => ok));
  assert.equal(maxRunning, 2);
  assert.ok(runs.length <= 4, `${runs.length} runs`);
  // Together the runs cover exactly the 300 ranges.
  runs.sort((a, b) => a[0] - b[0]);
  let pos = 0;
  for (const [off, len] of runs) {
    assert.equal(off, pos);
    pos += len;
  }
  assert.equal(pos, 300 * 65536);
});

test('property: callers get the outcome of a run that covered their range; no run covers a byte nobody asked for', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({ mode: fc.constantFrom<FallocateMode>('--punch-hole', '--zero-range'), start: fc.integer({ min: 0, max: 60 }), len: fc.integer({ min: 1, max: 8 }) }),
        { minLength: 1, maxLength: 40 },
      ),
      fc.integer({ min: 1, max: 3 }),
      async (reqs, concurrency) => {
        let running = 0;
        const runs: Array<{ mode: FallocateMode; start: number; end: number; ok: boolean }> = [];
        const q = new FallocateQueue(async (mode, offset, length) => {
          running++;
          assert.ok(running <= concurrency);
          // Some runs fail (an unsupported file system): the outcome must reach the callers.
          const ok = (offset + length) % 3 !== 0;
          runs.push({ mode, start: offset, end: offset + length, ok });
          await tick();
          running--;
          return ok;
        }, concurrency);
        const outcomes = await Promise.all(reqs.map((r) => q.submit(r.mode, r.start, r.len)));
        reqs.forEach((r, i) => {
          const covering = runs.filter((x) => x.mode === r.mode && x.start <= r.start && x.end >= r.start + r.len);
          assert.ok(covering.length >= 1, `no run covered ${r.mode} ${r.start}+${r.len}`);
          assert.ok(covering.some((x) => x.ok === outcomes[i]));
        });
        for (const run of runs) {
          for (let b = run.start; b < run.end; b++) {
            assert.ok(reqs.some((r) => r.mode === run.mode && r.start <= b && r.start + r.len > b), `byte ${b} run without a request`);
          }
        }
        assert.ok(runs.length <= reqs.length);
      },
    ),
    { numRuns: 300 },
  );
});
