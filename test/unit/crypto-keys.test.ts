import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deriveKey, deriveSubKeys, HKDF_SALT, KEY_LABELS, SECRET_SIZE } from '../../src/crypto/keys';
import { generateSecret, readSecretFile, writeSecretFile } from '../../src/crypto/secret-file';
import { StiefelError } from '../../src/errors';
import { requireTool } from '../helpers/tools';

const secret = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');

test('every sub-key equals OpenSSL HKDF-SHA256 with our salt and label', () => {
  requireTool('openssl');
  for (const [purpose, label] of Object.entries(KEY_LABELS)) {
    const out = execFileSync('openssl', [
      'kdf', '-keylen', '32', '-kdfopt', 'digest:SHA256', '-kdfopt', `hexkey:${secret.toString('hex')}`,
      '-kdfopt', `salt:${HKDF_SALT}`, '-kdfopt', `info:${label}`, 'HKDF',
    ], { encoding: 'utf8' });
    const expected = out.trim().replace(/:/g, '').toLowerCase();
    assert.equal(deriveKey(secret, purpose as keyof typeof KEY_LABELS).toString('hex'), expected, purpose);
  }
});

test('labels are distinct, and so are the keys; none equals the secret', () => {
  const labels = Object.values(KEY_LABELS);
  assert.equal(new Set(labels).size, labels.length);
  const keys = deriveSubKeys(secret);
  const hex = Object.values(keys).map((k) => k.toString('hex'));
  assert.equal(new Set(hex).size, hex.length);
  assert.ok(!hex.includes(secret.toString('hex')));
  assert.ok(Object.isFrozen(keys));
});

test('a different secret gives different keys', () => {
  const other = Buffer.from(secret);
  other[0]! ^= 1;
  assert.notDeepEqual(deriveSubKeys(other).discovery, deriveSubKeys(secret).discovery);
  assert.throws(() => deriveKey(Buffer.alloc(31), 'discovery'), RangeError);
});

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'stf3-secret-'));
}

test('a written secret is 32 bytes, mode 0600, and reads back', async () => {
  const dir = tmp();
  try {
    const path = join(dir, 'sub', 'secret');
    const s = generateSecret();
    assert.equal(s.length, SECRET_SIZE);
    await writeSecretFile(path, s);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readFileSync(path), s);
    assert.deepEqual(await readSecretFile(path), s);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an existing secret is never replaced without force', async () => {
  const dir = tmp();
  try {
    const path = join(dir, 'secret');
    const first = generateSecret();
    await writeSecretFile(path, first);
    await assert.rejects(writeSecretFile(path, generateSecret()), (e: StiefelError) => e.code === 'E_SECRET_EXISTS' && /--force/.test(e.message));
    assert.deepEqual(readFileSync(path), first);
    const second = generateSecret();
    await writeSecretFile(path, second, { force: true });
    assert.deepEqual(readFileSync(path), second);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a secret of the wrong size, readable by others, or missing is refused with the fix', async () => {
  const dir = tmp();
  try {
    const short = join(dir, 'short');
    writeFileSync(short, Buffer.alloc(16), { mode: 0o600 });
    await assert.rejects(readSecretFile(short), (e: StiefelError) => e.code === 'E_SECRET_INVALID' && /16 bytes, not 32/.test(e.message));
    const open = join(dir, 'open');
    writeFileSync(open, Buffer.alloc(32));
    chmodSync(open, 0o644);
    await assert.rejects(readSecretFile(open), (e: StiefelError) => e.code === 'E_SECRET_MODE' && e.message.includes(`chmod 600 ${open}`));
    await assert.rejects(readSecretFile(join(dir, 'nope')), (e: StiefelError) => e.code === 'E_SECRET_MISSING' && /stiefelctl init/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
