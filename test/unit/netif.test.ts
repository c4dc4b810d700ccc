import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ipv4Broadcast, isSelected, watchInterfaces, type NetworkControl } from '../../src/netif/interfaces';
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
