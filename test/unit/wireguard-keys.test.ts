import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { WG_KEY_PATTERN, generateWireGuardKeyPair, randomTunnelPrefix, wireGuardPublicKey } from '../../src/wireguard/keys';
import { requireTool } from '../helpers/tools';

test('our key pairs are the ones wg(8) computes, and wg keys are ours', () => {
  requireTool('wg');
  for (let i = 0; i < 5; i++) {
    const pair = generateWireGuardKeyPair();
    assert.match(pair.privateKey, WG_KEY_PATTERN);
    assert.match(pair.publicKey, WG_KEY_PATTERN);
    assert.equal(execFileSync('wg', ['pubkey'], { input: `${pair.privateKey}\n`, encoding: 'utf8' }).trim(), pair.publicKey);
    const theirs = execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim();
    assert.equal(wireGuardPublicKey(theirs), execFileSync('wg', ['pubkey'], { input: `${theirs}\n`, encoding: 'utf8' }).trim());
  }
  assert.notEqual(generateWireGuardKeyPair().privateKey, generateWireGuardKeyPair().privateKey);
  assert.throws(() => wireGuardPublicKey('c2hvcnQ='), /32 bytes/);
});

test('tunnel prefixes are unique-local /64s', () => {
  assert.equal(randomTunnelPrefix(() => Buffer.from('0102030405', 'hex')), 'fd01:203:405:');
  assert.match(randomTunnelPrefix(), /^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}:$/);
});
