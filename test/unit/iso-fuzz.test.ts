// Property: inspecting any damaged copy of a small hand-made ISO either
// succeeds or throws a StiefelError, soon, reading a bounded number of bytes.
// (test/disk/iso-inspect.test.ts does the same on ISOs made by xorriso.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StiefelError } from '../../src/errors';
import { inspectIso } from '../../src/iso/inspect';
import { memorySource, sampleImage, SECTOR } from './iso-bytes';

// Flips land anywhere, and more often in the descriptors, directories and catalog (sectors 16-23).
const base = sampleImage();

test('inspect on corrupted hand-made images: success or a StiefelError, never another exception', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.oneof(fc.nat(base.length - 1), fc.integer({ min: 16 * SECTOR, max: 24 * SECTOR - 1 })), fc.nat(255)), { minLength: 1, maxLength: 40 }),
      fc.option(fc.nat(base.length), { freq: 4 }),
      async (flips, cut) => {
        const img = Buffer.from(base);
        for (const [at, v] of flips) img[at] = v;
        const src = memorySource(cut === null ? img : img.subarray(0, cut));
        const started = Date.now();
        try {
          await inspectIso(src);
        } catch (err) {
          assert.ok(err instanceof StiefelError, `not a StiefelError: ${err instanceof Error ? err.stack : String(err)}`);
          assert.doesNotMatch(err.message, /\n/, 'one line');
        }
        assert.ok(Date.now() - started < 2000, 'within 2 s');
        assert.ok(src.bytesRead < 64 * SECTOR * 64, `read ${src.bytesRead} bytes of a 60 KiB image`);
      },
    ),
    { numRuns: 400 },
  );
});
