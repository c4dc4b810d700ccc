// The no-laptop menu as drawn on an 80x25 console, the choices it takes, the
// DHCP lease as udhcpc's script reports it, and which ISO entries boot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isoItem, menuItems, menuText, parseChoice } from '../../src/desktop/no-laptop-menu';
import { parseLease } from '../../src/netif/dhcp-client';
import { checkBootable, chooseEntry, isoCmdline } from '../../src/desktop/iso-boot';
import type { IsoBootEntry } from '../../src/iso/inspect';

const SHA = 'ab'.repeat(32);

test('the menu fits 80x25 with the most ISOs it lists, and takes keys and Enter only', () => {
  const isos = Array.from({ length: 40 }, (_, i) => `https://example.org/${'very-long-name-'.repeat(6)}${i}.iso sha256:${SHA}`);
  const items = menuItems(isos);
  const text = menuText('No laptop answered within 60 s. What now?', items);
  const lines = text.split('\n');
  assert.ok(lines.length <= 24, `${lines.length} lines, one more for the prompt`);
  for (const l of lines) assert.ok(l.length <= 80, l);
  assert.deepEqual(parseChoice(' 1 ', items), { kind: 'look' });
  assert.deepEqual(parseChoice('2', items), { kind: 'iso', url: 'https://example.org/' + 'very-long-name-'.repeat(6) + '0.iso', sha256: SHA });
  assert.deepEqual(parseChoice('U', items), { kind: 'url' });
  assert.deepEqual(parseChoice('s', items), { kind: 'shell' });
  assert.equal(parseChoice('', items), undefined);
  assert.equal(parseChoice('99', items), undefined);
  assert.deepEqual(isoItem('https://a/b.iso'), { url: 'https://a/b.iso' });
  assert.deepEqual(isoItem('http://a/F.iso sums:http://a/F-CHECKSUM'), { url: 'http://a/F.iso', sums: 'http://a/F-CHECKSUM' });
  assert.deepEqual(parseChoice('2', menuItems(['https://a/b.iso sums:https://a/SHA256SUMS'])), { kind: 'iso', url: 'https://a/b.iso', sums: 'https://a/SHA256SUMS' });
  assert.deepEqual(
    menuItems([]).map((i) => `${i.key} ${i.label}`),
    ['1 keep looking for the laptop', 'u boot an ISO from a URL (typed here)', 'f boot an ISO file from a USB disk', 's rescue shell'],
  );
});

test("udhcpc's lease as our script prints it, and what is not a lease", () => {
  assert.deepEqual(parseLease('stiefel-lease ip=10.99.0.12 mask=24 router=10.99.0.1 dns=10.99.0.1 9.9.9.9\n', 'eth0'), {
    interface: 'eth0',
    address: '10.99.0.12',
    prefixLength: 24,
    routers: ['10.99.0.1'],
    dns: ['10.99.0.1', '9.9.9.9'],
  });
  assert.deepEqual(parseLease('stiefel-lease ip=10.0.0.2 mask=8 router= dns=\n', 'eth1')?.routers, []);
  for (const bad of ['', 'stiefel-lease ip= mask=24 router= dns=', 'stiefel-lease ip=10.0.0.999 mask=24 router= dns=', 'stiefel-lease ip=10.0.0.2 mask=33 router= dns=', 'stiefel-lease ip=10.0.0.2; rm -rf / mask=24 router= dns=']) {
    assert.equal(parseLease(bad, 'eth0'), undefined, bad);
  }
});

function entry(o: Partial<IsoBootEntry>): IsoBootEntry {
  return {
    number: 1,
    menu: 'isolinux',
    config: '/isolinux/isolinux.cfg',
    id: 'install',
    title: 'Install',
    kernel: '/linux',
    kernelExists: true,
    initrds: [{ path: '/initrd.gz', exists: true }],
    cmdline: 'vga=788 initrd=/initrd.gz --- quiet',
    default: false,
    distro: 'debian-installer',
    ...o,
  } as IsoBootEntry;
}

test('which entry boots: the asked one, else the default; live ISOs and missing files refused with the reason', () => {
  const entries = [entry({ number: 1 }), entry({ number: 2, default: true, title: 'Default' }), entry({ number: 3, kernelExists: false, default: true })];
  assert.equal(chooseEntry(entries, undefined, 'x.iso').number, 2);
  assert.equal(chooseEntry(entries, 1, 'x.iso').number, 1);
  assert.throws(() => chooseEntry(entries, 7, 'x.iso'), /x\.iso has no entry 7 \(it has 1 to 3/);
  assert.throws(() => checkBootable(entries[2]!, 'x.iso'), /names the kernel \/linux, which is not on the ISO/);
  assert.throws(() => checkBootable(entry({ initrds: [{ path: '/i', exists: false }] }), 'x.iso'), /names the initrd \/i, which is not on the ISO/);
  assert.throws(() => checkBootable(entry({ distro: 'debian-live' }), 'x.iso'), /is Debian live: its initramfs \(live-boot\) looks for the ISO file again once the kernel runs, and this ISO is not a file on a disk; copy the ISO to a USB disk and boot it from there \(menu item f\)/);
  const inRam = { found: false, why: 'it was downloaded into RAM (a tmpfs), where the ISO\'s kernel cannot see it' } as const;
  assert.throws(() => checkBootable(entry({ distro: 'ubuntu-casper' }), 'x.iso', inRam), /is Ubuntu live \(casper\): .* and it was downloaded into RAM \(a tmpfs\)/);
  // A live ISO on a disk: its initramfs is told the path there (and archiso the device).
  const onDisk = { found: true, device: '/dev/sdb1', fsType: 'exfat', path: '/isos/x.iso', byId: '/dev/disk/by-uuid/1234-ABCD' } as const;
  assert.deepEqual(checkBootable(entry({ distro: 'debian-live' }), 'x.iso', onDisk), ['findiso=/isos/x.iso']);
  assert.deepEqual(checkBootable(entry({ distro: 'arch' }), 'x.iso', onDisk), ['img_dev=/dev/disk/by-uuid/1234-ABCD', 'img_loop=/isos/x.iso']);
  assert.deepEqual(checkBootable(entry({ distro: 'arch' }), 'x.iso', { ...onDisk, byId: undefined }), ['img_dev=/dev/sdb1', 'img_loop=/isos/x.iso']);
  assert.deepEqual(checkBootable(entry({ distro: 'fedora-live' }), 'x.iso', onDisk), ['iso-scan/filename=/isos/x.iso', 'rd.live.image']);
  assert.throws(() => checkBootable(entry({ distro: 'debian-live' }), 'x.iso', { ...onDisk, path: '/my isos/x.iso' }), /must be absolute and without blanks/);
  // Installers need nothing, wherever the ISO is.
  assert.deepEqual(checkBootable(entry({}), 'x.iso'), []);
  assert.deepEqual(checkBootable(entry({}), 'x.iso', onDisk), []);
  assert.deepEqual(checkBootable(entry({ distro: 'unknown' }), 'x.iso'), []);
  assert.equal(isoCmdline('vga=788 initrd=/initrd.gz console=tty1 --- quiet', 'console=tty0 console=ttyS0,115200'), 'vga=788 --- quiet console=tty0 console=ttyS0,115200');
  // The stick names the serial console, and its config's cmdline_append again: once, at its last place.
  assert.equal(isoCmdline('boot=live', 'console=ttyS0,115200 console=tty0 console=ttyS0,115200'), 'boot=live console=tty0 console=ttyS0,115200');
});
