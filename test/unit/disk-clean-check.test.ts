// What a file system says about how it was left, read from real ones made
// and marked by e2fsprogs; and TPM-sealed LUKS2 tokens.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkDiskHealth, extState, luksSealedToTpm } from '../../src/disk/clean-check';
import { readRange } from '../../src/disk/read-range';
import { requireTool } from '../helpers/tools';

const work = mkdtempSync(join(tmpdir(), 'stf14-clean-'));
after(() => rmSync(work, { recursive: true, force: true }));

function ext4(name: string): string {
  const p = join(work, name);
  execFileSync('truncate', ['-s', '16M', p]);
  execFileSync(requireTool('mke2fs'), ['-q', '-F', '-t', 'ext4', p]);
  return p;
}

test('ext4: clean when made, needs recovery with the flag a rw mount sets, errors with the error state', () => {
  const clean = ext4('clean.img');
  assert.equal(extState(readFileSync(clean)), 'clean');
  const dirty = ext4('dirty.img');
  // What a mounted-then-lost file system carries: the journal's needs_recovery flag.
  execFileSync(requireTool('debugfs'), ['-w', '-R', 'feature needs_recovery', dirty], { stdio: 'ignore' });
  assert.equal(extState(readFileSync(dirty)), 'needs-recovery');
  const broken = ext4('broken.img');
  execFileSync(requireTool('debugfs'), ['-w', '-R', 'ssv state 3', broken], { stdio: 'ignore' });
  assert.equal(extState(readFileSync(broken)), 'errors');
  assert.equal(extState(Buffer.alloc(4096)), undefined);
});

test('a whole disk: every ext partition checked, the rest listed as unchecked', async () => {
  const disk = join(work, 'disk.img');
  execFileSync('truncate', ['-s', '40M', disk]);
  execFileSync(requireTool('sgdisk'), ['-n1:2048:+16M', '-n2:0:+16M', disk], { stdio: 'ignore' });
  const a = ext4('p1.img');
  const b = ext4('p2.img');
  execFileSync(requireTool('debugfs'), ['-w', '-R', 'feature needs_recovery', b], { stdio: 'ignore' });
  execFileSync('dd', [`if=${a}`, `of=${disk}`, 'bs=512', 'seek=2048', 'conv=notrunc', 'status=none']);
  execFileSync('dd', [`if=${b}`, `of=${disk}`, 'bs=512', `seek=${2048 + 32768}`, 'conv=notrunc', 'status=none']);
  const h = await checkDiskHealth((o, l) => readRange(disk, o, l), 40 * 1024 * 1024);
  assert.deepEqual(h, { dirty: [{ partition: 2, state: 'needs-recovery' }], unchecked: [], clean: [1], tpmSealed: false });
});

test('LUKS2 tokens: systemd-cryptenroll and clevis TPM2 seals are seen; a password-only header is not', () => {
  const luks2 = (tokens: object): Buffer => {
    const b = Buffer.alloc(16384);
    b.write('LUKS\xba\xbe', 0, 'latin1');
    b.writeUInt16BE(2, 6);
    b.write(JSON.stringify({ keyslots: {}, tokens, segments: {}, digests: {}, config: {} }), 4096);
    return b;
  };
  assert.equal(luksSealedToTpm(luks2({ 0: { type: 'systemd-tpm2', keyslots: ['1'] } })), true);
  assert.equal(luksSealedToTpm(luks2({ 0: { type: 'clevis', jwe: { protected: 'x' }, pin: 'tpm2' } })), true);
  assert.equal(luksSealedToTpm(luks2({})), false);
  assert.equal(luksSealedToTpm(luks2({ 0: { type: 'systemd-fido2' } })), false);
  assert.equal(luksSealedToTpm(Buffer.alloc(8192)), false);
});
