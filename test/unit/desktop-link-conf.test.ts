import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { decodeNewc, encodeNewc } from '../../src/cpio/newc';
import { initrdPadding } from '../../src/cpio/newc';
import { encodeLinkConf, encodeSecretsCpio, parseLinkConf, LINK_CONF_PATH, type LinkConf } from '../../src/desktop/link-conf';
import { requireTool } from '../helpers/tools';

const conf: LinkConf = {
  mac: 'aa:bb:cc:00:11:22',
  interfaceName: 'stiefellink',
  serverAddress: 'fe80::1',
  nbdHost: '10.83.70.1',
  nbdPort: 10809,
  nbdExport: 'disk',
  nbdBlockSize: 512,
  wireguard: {
    clientPrivateKey: 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=',
    clientAddress: '10.83.70.2/30',
    serverPublicKey: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
    serverAddress: '10.83.70.1',
    serverPort: 51820,
  },
};

test('link.conf is shell-sourceable KEY=VALUE and reads back', () => {
  const text = encodeLinkConf(conf);
  assert.deepEqual(parseLinkConf(text), {
    STIEFEL_MAC: 'aa:bb:cc:00:11:22',
    STIEFEL_IFNAME: 'stiefellink',
    STIEFEL_SERVER: 'fe80::1',
    STIEFEL_NBD_HOST: '10.83.70.1',
    STIEFEL_NBD_PORT: '10809',
    STIEFEL_NBD_EXPORT: 'disk',
    STIEFEL_NBD_BLOCK_SIZE: '512',
    STIEFEL_WG_PRIVATE_KEY: conf.wireguard!.clientPrivateKey,
    STIEFEL_WG_ADDRESS: '10.83.70.2/30',
    STIEFEL_WG_PEER_PUBLIC_KEY: conf.wireguard!.serverPublicKey,
    STIEFEL_WG_PEER_ADDRESS: '10.83.70.1',
    STIEFEL_WG_PEER_PORT: '51820',
  });
  assert.ok(!/WG/.test(encodeLinkConf({ ...conf, wireguard: undefined })));
  assert.ok(!/MTU/.test(text), 'no MTU unless the laptop asks for one');
  assert.equal(parseLinkConf(encodeLinkConf({ ...conf, mtu: 9000 })).STIEFEL_LINK_MTU, '9000');
  assert.ok(!/CONNECTIONS/.test(text), 'one connection unless the laptop asks for more');
  assert.equal(parseLinkConf(encodeLinkConf({ ...conf, nbdConnections: 4 })).STIEFEL_NBD_CONNECTIONS, '4');
  assert.throws(() => encodeLinkConf({ ...conf, nbdExport: 'a b' }), RangeError);
  // A shell sees the same values.
  const out = execFileSync('sh', ['-c', `${text}\nprintf '%s|%s' "$STIEFEL_WG_PRIVATE_KEY" "$STIEFEL_SERVER"`], { encoding: 'utf8' });
  assert.equal(out, `${conf.wireguard!.clientPrivateKey}|fe80::1`);
});

test('the secrets cpio holds etc/stiefelsystem/link.conf, mode 0600 in a 0700 directory, reproducibly', () => {
  const a = encodeSecretsCpio(conf);
  assert.deepEqual(a, encodeSecretsCpio(conf));
  const { entries } = decodeNewc(a);
  assert.deepEqual(entries.map((e) => [e.path, (e.mode & 0o7777).toString(8), e.uid, e.gid, e.mtime]), [
    ['etc', '755', 0, 0, 0],
    ['etc/stiefelsystem', '700', 0, 0, 0],
    [LINK_CONF_PATH.slice(1), '600', 0, 0, 0],
  ]);
  assert.equal(entries[2]!.data.toString(), encodeLinkConf(conf));
});

test('appended to a compressed initrd with padding, both archives list with GNU cpio', () => {
  requireTool('cpio');
  const dir = mkdtempSync(join(tmpdir(), 'stf3-initrd-'));
  try {
    // A plain first archive of odd length, as initrds with early microcode are.
    const early = encodeNewc([{ type: 'file', path: 'kernel/x86/microcode/GenuineIntel.bin', data: Buffer.from('abc') }]);
    const main = gzipSync(encodeNewc([{ type: 'dir', path: 'etc' }, { type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 }]));
    const initrd = Buffer.concat([early, main]);
    const withSecrets = Buffer.concat([initrd, initrdPadding(initrd.length), encodeSecretsCpio(conf)]);
    assert.equal((initrd.length + initrdPadding(initrd.length).length) % 4, 0);
    const path = join(dir, 'initrd.img');
    writeFileSync(path, withSecrets);
    // The appended archive starts 4-aligned right after the padding and decodes.
    const start = initrd.length + initrdPadding(initrd.length).length;
    assert.equal(decodeNewc(readFileSync(path), start).entries.at(-1)!.path, 'etc/stiefelsystem/link.conf');
    const listed = execFileSync('cpio', ['-t', '--quiet'], { input: withSecrets.subarray(start), encoding: 'utf8' });
    assert.deepEqual(listed.trim().split('\n'), ['etc', 'etc/stiefelsystem', 'etc/stiefelsystem/link.conf']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('padding puts the appended archive on a 4-byte boundary', () => {
  for (let n = 0; n < 12; n++) assert.equal((n + initrdPadding(n).length) % 4, 0);
  assert.ok(initrdPadding(5).every((b) => b === 0));
});
