import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildLaptopCmdline, CmdlineError, splitCmdline, isIpv6, type LaptopCmdlineOptions } from '../../src/cmdline/laptop-cmdline';

const base: LaptopCmdlineOptions = {
  base: 'BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=0a1b ro quiet',
  family: 'initramfs-tools',
  attach: 'family',
  link: { mac: 'AA:BB:CC:00:11:22', interfaceName: 'stiefellink', serverAddress: 'fe80::1' },
  nbd: { host: 'fe80::1', port: 10809, export: 'disk' },
};
const STIEFEL =
  'stiefel.mac=aa:bb:cc:00:11:22 stiefel.ifname=stiefellink stiefel.server=fe80::1 stiefel.nbd_host=fe80::1 ' +
  'stiefel.nbd_port=10809 stiefel.nbd_export=disk stiefel.conf=/etc/stiefelsystem/link.conf';

test('with stiefelsystem\'s hooks only the stiefel.* parameters are added, whatever the family', () => {
  for (const family of ['initramfs-tools', 'dracut', 'mkinitcpio'] as const) {
    assert.equal(
      buildLaptopCmdline({ ...base, family, attach: 'stiefelsystem', base: 'root=UUID=0a1b ro ip=dhcp' }),
      `root=UUID=0a1b ro ip=dhcp ${STIEFEL}`,
    );
  }
});

test('initramfs-tools: nbd-client\'s nbdroot=[addr%if]:port/export, nbddev, ip=off', () => {
  assert.equal(
    buildLaptopCmdline(base),
    `BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=0a1b ro quiet ${STIEFEL} nbdroot=[fe80::1%stiefellink]:10809/disk nbddev=/dev/nbd0 ip=off`,
  );
});

test('dracut: ifname= by MAC, link6, and netroot=nbd: for an IPv4 host only', () => {
  assert.equal(
    buildLaptopCmdline({ ...base, family: 'dracut' }),
    `BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=0a1b ro quiet ${STIEFEL} rd.neednet=1 ifname=stiefellink:aa:bb:cc:00:11:22 ip=stiefellink:link6`,
  );
  const v4 = buildLaptopCmdline({ ...base, family: 'dracut', nbd: { host: '10.83.70.1', port: 10809, export: 'disk' } });
  assert.match(v4, / netroot=nbd:10\.83\.70\.1:disk$/);
  assert.match(v4, / stiefel\.nbd_host=10\.83\.70\.1 /);
  const port = buildLaptopCmdline({ ...base, family: 'dracut', nbd: { host: '10.83.70.1', port: 10900, export: 'disk' } });
  assert.match(port, / netroot=nbd:10\.83\.70\.1:10900$/);
});

test('mkinitcpio: nbd_host (zoned for link-local), nbd_name, nbd_port', () => {
  assert.equal(
    buildLaptopCmdline({ ...base, family: 'mkinitcpio' }),
    `BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=0a1b ro quiet ${STIEFEL} nbd_host=fe80::1%stiefellink nbd_name=disk nbd_port=10809`,
  );
});

test('an IPv4 NBD host in initramfs-tools form has no brackets', () => {
  assert.match(buildLaptopCmdline({ ...base, nbd: { host: '10.0.0.1', port: 10809, export: 'root' } }), / nbdroot=10\.0\.0\.1:10809\/root nbddev=/);
});

test('parameters we own are replaced, others kept (quotes included)', () => {
  const out = buildLaptopCmdline({
    ...base,
    base: 'root=/dev/sda1 stiefel.mac=00:00:00:00:00:00 nbdroot=old ip=dhcp ifname=eth9:00:11:22:33:44:55 foo="a b" netroot=nbd:x:y',
  });
  const words = splitCmdline(out);
  assert.deepEqual(words.filter((w) => w.startsWith('stiefel.mac=')), ['stiefel.mac=aa:bb:cc:00:11:22']);
  assert.deepEqual(words.filter((w) => w.startsWith('nbdroot=')), ['nbdroot=[fe80::1%stiefellink]:10809/disk']);
  assert.deepEqual(words.filter((w) => w.startsWith('ip=')), ['ip=off']);
  assert.ok(words.includes('foo="a b"'));
  assert.ok(words.includes('ifname=eth9:00:11:22:33:44:55'));
  assert.ok(!words.includes('netroot=nbd:x:y'));
  assert.ok(words.includes('root=/dev/sda1'));
});

test('the builder has no way to put keys on the line, and refuses bad input', () => {
  // The options type has no field for keys; the values it takes are checked.
  assert.throws(() => buildLaptopCmdline({ ...base, link: { ...base.link, mac: 'zz' } }), CmdlineError);
  assert.throws(() => buildLaptopCmdline({ ...base, link: { ...base.link, serverAddress: 'fe80::1%eth0' } }), CmdlineError);
  assert.throws(() => buildLaptopCmdline({ ...base, nbd: { ...base.nbd, export: 'a b' } }), CmdlineError);
  assert.throws(() => buildLaptopCmdline({ ...base, nbd: { ...base.nbd, host: 'host name' } }), CmdlineError);
  assert.throws(() => buildLaptopCmdline({ ...base, link: { ...base.link, interfaceName: 'a/b' } }), CmdlineError);
  assert.throws(() => buildLaptopCmdline({ ...base, base: 'x'.repeat(2000) }), /more than the kernel's 2047/);
});

test('splitting follows the kernel: spaces separate, double quotes group', () => {
  assert.deepEqual(splitCmdline('  a  b="c d"   e\t'), ['a', 'b="c d"', 'e']);
  assert.deepEqual(splitCmdline(''), []);
  assert.ok(isIpv6('fe80::1') && isIpv6('2001:db8:0:0:0:0:0:1') && !isIpv6('1:2:3') && !isIpv6('fe80:::1') && !isIpv6('::1::2'));
});
