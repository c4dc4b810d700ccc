import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ipv4Broadcast, isSelected, systemNetworkControl, watchInterfaces, type NetworkControl } from '../../src/netif/interfaces';
import { silentLogger } from '../../src/log';

test('selection: lo never, excludes by name or prefix*, or only the listed ones', () => {
  const all = { interfaces: 'all' as const, exclude: ['docker0', 'wl*'] };
  assert.ok(isSelected('eth0', all));
  assert.ok(!isSelected('lo', all));
  assert.ok(!isSelected('docker0', all));
  assert.ok(!isSelected('wlp3s0', all));
  assert.ok(isSelected('docker01', all));
  const some = { interfaces: ['eth1'], exclude: [] };
  assert.ok(isSelected('eth1', some) && !isSelected('eth0', some));
});

test('directed broadcast addresses', () => {
  assert.equal(ipv4Broadcast('192.168.1.17', '255.255.255.0'), '192.168.1.255');
  assert.equal(ipv4Broadcast('10.1.2.3', '255.255.0.0'), '10.1.255.255');
  assert.equal(ipv4Broadcast('10.1.2.3', '255.255.255.252'), '10.1.2.3');
});

test('the watcher brings up present interfaces, then new ones, retrying failures', async () => {
  const present = ['lo', 'eth0', 'wl0'];
  const up: string[] = [];
  let failEth1 = true;
  const net: NetworkControl = {
    list: async () => [...present],
    bringUp: async (n) => {
      if (n === 'eth1' && failEth1) {
        failEth1 = false;
        throw new Error('busy');
      }
      up.push(n);
    },
    mac: async () => undefined,
    ipv4: () => [],
  };
  const w = watchInterfaces({ interfaces: 'all', exclude: ['wl*'], intervalMs: 10_000 }, { log: silentLogger, net });
  await w.ready;
  assert.deepEqual([...w.up], ['eth0']);
  present.push('eth1');
  await w.scan();
  assert.deepEqual([...w.up], ['eth0'], 'first attempt failed');
  await w.scan();
  assert.deepEqual([...w.up].sort(), ['eth0', 'eth1']);
  present.splice(present.indexOf('eth0'), 1);
  await w.scan();
  assert.deepEqual([...w.up], ['eth1'], 'a removed interface is forgotten');
  assert.deepEqual(up, ['eth0', 'eth1']);
  w.stop();
});

test('link.mtu: set before the link comes up, only where it differs; a driver that refuses it is named and the link still comes up', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf15-mtu-'));
  try {
    // A sysfs-shaped directory and a stand-in for iproute2 that logs its arguments (eth1's driver refuses 9000).
    for (const [name, mtu] of [['eth0', '1500'], ['eth1', '1500'], ['eth2', '9000']] as const) {
      mkdirSync(join(dir, 'net', name), { recursive: true });
      writeFileSync(join(dir, 'net', name, 'mtu'), `${mtu}\n`);
      writeFileSync(join(dir, 'net', name, 'flags'), '0x1002\n');
    }
    const log = join(dir, 'ip.log');
    const ip = join(dir, 'ip');
    writeFileSync(ip, `#!/bin/sh\necho "$*" >> ${log}\ncase "$*" in *eth1*mtu*) echo "Error: mtu greater than device maximum." >&2; exit 2 ;; esac\n`, { mode: 0o755 });
    const warnings: string[] = [];
    const net = systemNetworkControl({ sysClassNet: join(dir, 'net'), ipv6Conf: join(dir, 'conf'), ip, mtu: 9000, warn: (m) => warnings.push(m) });
    for (const name of ['eth0', 'eth1', 'eth2']) await net.bringUp(name);
    assert.deepEqual(readFileSync(log, 'utf8').trim().split('\n'), [
      'link set dev eth0 mtu 9000',
      'link set dev eth0 up',
      'link set dev eth1 mtu 9000',
      'link set dev eth1 up',
      'link set dev eth2 up',
    ]);
    assert.deepEqual(warnings, ['eth1 does not take MTU 9000 (Error: mtu greater than device maximum.): it stays at 1500, and TCP keeps to the smaller one']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
