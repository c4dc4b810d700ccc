// Pure NBD codecs: exact bytes of the encoders, and property tests of the
// decoders (the incremental parser has its own test file).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NbdDecodeError,
  decodeGoOption,
  decodeMetaContextOption,
  decodeRequestHeader,
  encodeBlockStatus,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeOptionReply,
  encodeString,
  encodeStructuredError,
} from '../../src/nbd/codec';
import * as P from '../../src/nbd/protocol';
import { encodeGoOptionData, encodeMetaContextOptionData, encodeRequest } from '../helpers/nbd-encode';

const hex = (b: Buffer): string => b.toString('hex');

test('the greeting is NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES', () => {
  assert.equal(hex(encodeGreeting()), '4e42444d41474943' + '49484156454f5054' + '0003');
});

test('an option reply has the reply magic, option, type, length and data', () => {
  assert.equal(hex(encodeOptionReply(P.NBD_OPT_GO, P.NBD_REP_ACK)), '0003e889045565a9' + '00000007' + '00000001' + '00000000');
  assert.equal(
    hex(encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_ERR_UNSUP, Buffer.from('hi'))),
    '0003e889045565a9' + '00000003' + '80000001' + '00000002' + '6869',
  );
  assert.equal(
    hex(encodeInfoBlockSize(P.NBD_OPT_GO, { minimum: 1, preferred: 4096, maximum: 33554432 })),
    '0003e889045565a9' + '00000007' + '00000003' + '0000000e' + '0003' + '00000001' + '00001000' + '02000000',
  );
});

test('the NBD_OPT_EXPORT_NAME reply has 124 zero bytes unless NO_ZEROES', () => {
  const a = encodeExportNameReply(0x1_0000_0200, 0x1234, false);
  assert.equal(a.length, 134);
  assert.equal(hex(a.subarray(0, 10)), '0000000100000200' + '1234');
  assert.ok(a.subarray(10).every((x) => x === 0));
  assert.equal(encodeExportNameReply(512, 1, true).length, 10);
});

test('structured error and block status chunks', () => {
  assert.equal(
    hex(encodeStructuredError(1, 2, P.NBD_EINVAL, 'no')),
    '668e33ef' + '0001' + '8001' + '00000001' + '00000002' + '00000008' + '00000016' + '0002' + '6e6f',
  );
  assert.equal(
    hex(encodeBlockStatus(0, 9, 1, [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }])),
    '668e33ef' + '0001' + '0005' + '00000000' + '00000009' + '00000014' + '00000001' + '00001000' + '00000003' + '00000200' + '00000000',
  );
});

test('strings are cut to 4096 bytes at a character boundary and lose NULs', () => {
  assert.equal(encodeString('a\0b').toString(), 'ab');
  const long = encodeString('é'.repeat(3000));
  assert.ok(long.length <= 4096);
  assert.equal(long.toString(), 'é'.repeat(2048));
});

test('decodeGoOption reads name and information requests and rejects inconsistent lengths', () => {
  assert.deepEqual(decodeGoOption(encodeGoOptionData('disk', [3, 1])), { name: 'disk', infoRequests: [3, 1] });
  assert.deepEqual(decodeGoOption(encodeGoOptionData('', [])), { name: '', infoRequests: [] });
  const bad = encodeGoOptionData('disk', [3]);
  bad.writeUInt32BE(100, 0);
  assert.throws(() => decodeGoOption(bad), NbdDecodeError);
  assert.throws(() => decodeGoOption(Buffer.alloc(5)), NbdDecodeError);
  assert.throws(() => decodeGoOption(Buffer.concat([encodeGoOptionData('x', [1]), Buffer.alloc(1)])), NbdDecodeError);
  const nul = encodeGoOptionData('a\0b', []);
  assert.throws(() => decodeGoOption(nul), /NUL/);
  const badUtf8 = encodeGoOptionData('ab', []);
  badUtf8[4] = 0xff;
  assert.throws(() => decodeGoOption(badUtf8), /UTF-8/);
});

test('decodeMetaContextOption reads queries and rejects lengths beyond the data', () => {
  assert.deepEqual(decodeMetaContextOption(encodeMetaContextOptionData('e', ['base:allocation', 'qemu:x'])), {
    exportName: 'e',
    queries: ['base:allocation', 'qemu:x'],
  });
  const bad = encodeMetaContextOptionData('e', ['base:allocation']);
  bad.writeUInt32BE(1000, 9);
  assert.throws(() => decodeMetaContextOption(bad), NbdDecodeError);
  const count = encodeMetaContextOptionData('', []);
  count.writeUInt32BE(5, 4);
  assert.throws(() => decodeMetaContextOption(count), NbdDecodeError);
});

test('property: option data decoders either decode or throw NbdDecodeError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
      for (const decode of [decodeGoOption, decodeMetaContextOption]) {
        try {
          decode(Buffer.from(bytes));
        } catch (err) {
          assert.ok(err instanceof NbdDecodeError, String(err));
        }
      }
    }),
    { numRuns: 1000 },
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 50 }).filter((s) => !s.includes('\0')), fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), (name, infos) => {
      assert.deepEqual(decodeGoOption(encodeGoOptionData(name, infos)), { name, infoRequests: infos });
    }),
  );
  fc.assert(
    fc.property(fc.string({ maxLength: 30 }).filter((s) => !s.includes('\0')), fc.array(fc.string({ maxLength: 30 }).filter((s) => !s.includes('\0')), { maxLength: 5 }), (name, queries) => {
      assert.deepEqual(decodeMetaContextOption(encodeMetaContextOptionData(name, queries)), { exportName: name, queries });
    }),
  );
});

const arbRequest = fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xffff }).filter((t) => t !== P.NBD_CMD_WRITE),
  handleHi: fc.integer({ min: 0, max: 0xffffffff }),
  handleLo: fc.integer({ min: 0, max: 0xffffffff }),
  offset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  length: fc.integer({ min: 0, max: 0xffffffff }),
});

test('property: decodeRequestHeader inverts encodeRequest below 2^53', () => {
  fc.assert(
    fc.property(arbRequest, (r) => {
      assert.deepEqual(decodeRequestHeader(encodeRequest(r)), { ...r });
    }),
  );
});
