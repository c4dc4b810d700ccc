// The incremental newc scanner: any split of the stream gives the entries
// decodeNewc gives at once; wanted entries carry their data; concatenated,
// zero-padded archives go on; malformed input is a CpioError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CpioError, decodeNewc, encodeNewc, type CpioEntry } from '../../src/cpio/newc';
import { NewcScanner } from '../../src/cpio/newc-scan';

const entryArb: fc.Arbitrary<CpioEntry> = fc.oneof(
  fc.record({ type: fc.constant('file' as const), path: fc.stringMatching(/^[a-z]{1,8}(\/[a-z0-9]{1,12}){0,3}$/), data: fc.uint8Array({ maxLength: 300 }) }),
  fc.record({ type: fc.constant('dir' as const), path: fc.stringMatching(/^[a-z]{1,8}$/) }),
  fc.record({ type: fc.constant('symlink' as const), path: fc.stringMatching(/^[a-z]{1,8}\/l$/), target: fc.stringMatching(/^\/[a-z]{1,10}$/) }),
);

function uniqueByPath(entries: CpioEntry[]): CpioEntry[] {
  const seen = new Map<string, CpioEntry>();
  for (const e of entries) seen.set(e.path, e);
  return [...seen.values()];
}

function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

test('property: any chunking yields the entries decodeNewc finds, with the data of the wanted ones', () => {
  fc.assert(
    fc.property(fc.array(entryArb, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), fc.nat(3), (raw, cuts, pad) => {
      const entries = uniqueByPath(raw);
      // Two archives, zero padding between them, as an initrd with an appended cpio.
      const a = encodeNewc(entries);
      const b = encodeNewc([{ type: 'file', path: 'etc/extra', data: Buffer.from('x') }]);
      const stream = Buffer.concat([a, Buffer.alloc(pad * 4), b]);
      const want = new Set(entries.filter((_, i) => i % 2 === 0).map((e) => e.path));
      const scanner = new NewcScanner((p) => want.has(p) || p === 'etc/extra');
      const got = split(stream, cuts).flatMap((c) => scanner.push(c));
      const expected = [...decodeNewc(a).entries, ...decodeNewc(b).entries];
      assert.deepEqual(got.map((e) => [e.path, e.mode, e.size]), expected.map((e) => [e.path, e.mode, e.data.length]));
      for (const e of got) {
        const d = expected.find((x) => x.path === e.path)!;
        if (want.has(e.path) || e.path === 'etc/extra') assert.ok(e.data?.equals(d.data), e.path);
        else assert.equal(e.data, undefined);
      }
      assert.ok(scanner.atBoundary);
      assert.equal(scanner.offset, stream.length);
    }),
    { numRuns: 300 },
  );
});

test('a cut-off archive is not at a boundary; garbage and oversized wanted entries are CpioErrors', () => {
  const a = encodeNewc([{ type: 'file', path: 'etc/stiefelsystem/secret', data: Buffer.alloc(32, 7) }]);
  const s = new NewcScanner(() => true);
  assert.deepEqual(s.push(a.subarray(0, 150)), []);
  assert.equal(s.atBoundary, false);
  assert.throws(() => new NewcScanner().push(Buffer.from('070702' + '0'.repeat(200))), CpioError);
  assert.throws(() => new NewcScanner(() => true, 16).push(a), /more than the 16 looked at/);
});

test('property: arbitrary bytes either parse or throw CpioError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
      try {
        new NewcScanner(() => true).push(bytes);
      } catch (err) {
        assert.ok(err instanceof CpioError, String(err));
      }
    }),
    { numRuns: 500 },
  );
});
