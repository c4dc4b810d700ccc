// Distribution recognition from what is on an ISO, and the table of kernel
// parameters each distribution's initramfs needs to find the ISO file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StiefelError } from '../../src/errors';
import { entryDistro, ISO_DISTROS, isoBootParameters, recognizeDistro, withIsoParameters, type IsoFacts } from '../../src/iso/distro';

const facts = (f: Partial<IsoFacts>): IsoFacts => ({ label: '', existing: new Set(), cmdlines: [], diskInfo: null, ...f });

test('each distribution is recognised by its directories, its command line words or its label', () => {
  assert.equal(recognizeDistro(facts({ existing: new Set(['/live', '/install.amd']) })).id, 'debian-live', 'a Debian live ISO carries the installer too: live wins');
  assert.equal(recognizeDistro(facts({ cmdlines: ['boot=live components quiet'] })).id, 'debian-live');
  assert.equal(recognizeDistro(facts({ existing: new Set(['/install.amd']), diskInfo: 'Debian GNU/Linux 12.5.0 "Bookworm" - Official amd64 NETINST' })).id, 'debian-installer');
  assert.equal(recognizeDistro(facts({ existing: new Set(['/casper']) })).id, 'ubuntu-casper');
  assert.equal(recognizeDistro(facts({ cmdlines: ['boot=casper quiet splash ---'] })).id, 'ubuntu-casper');
  assert.equal(recognizeDistro(facts({ existing: new Set(['/arch/boot']) })).id, 'arch');
  assert.equal(recognizeDistro(facts({ cmdlines: ['archisobasedir=arch archisosearchuuid=2024-06-01-08-18-31-00'] })).id, 'arch');
  const byLabel = recognizeDistro(facts({ label: 'ARCH_202406' }));
  assert.deepEqual([byLabel.id, byLabel.evidence], ['arch', ['label ARCH_202406']]);
  assert.equal(recognizeDistro(facts({ existing: new Set(['/LiveOS/squashfs.img']) })).id, 'fedora-live');
  assert.equal(recognizeDistro(facts({ cmdlines: ['root=live:CDLABEL=Fedora-WS-Live-40 rd.live.image quiet'] })).id, 'fedora-live');
  const none = recognizeDistro(facts({ label: 'MYDISK', cmdlines: ['quiet'], diskInfo: 'something' }));
  assert.deepEqual([none.id, none.info], ['unknown', 'something']);
});

test('an entry\'s family comes from its own command line and kernel path, else the ISO\'s', () => {
  assert.equal(entryDistro('/install.amd/vmlinuz', 'vga=788 --- quiet', 'debian-live'), 'debian-installer');
  assert.equal(entryDistro('/live/vmlinuz', 'boot=live', 'unknown'), 'debian-live');
  assert.equal(entryDistro('/casper/vmlinuz', '', 'unknown'), 'ubuntu-casper');
  assert.equal(entryDistro('/vmlinuz', 'quiet', 'arch'), 'arch');
});

test('the parameters table: findiso, iso-scan/filename, img_dev/img_loop, rd.live.image, nothing for installers', () => {
  assert.deepEqual(isoBootParameters('debian-live', '/isos/d.iso'), ['findiso=/isos/d.iso']);
  assert.deepEqual(isoBootParameters('ubuntu-casper', '/isos/u.iso'), ['iso-scan/filename=/isos/u.iso']);
  assert.deepEqual(isoBootParameters('arch', '/isos/a.iso', { device: '/dev/disk/by-uuid/1234-ABCD' }), ['img_dev=/dev/disk/by-uuid/1234-ABCD', 'img_loop=/isos/a.iso']);
  assert.deepEqual(isoBootParameters('fedora-live', '/f.iso'), ['iso-scan/filename=/f.iso', 'rd.live.image']);
  assert.deepEqual(isoBootParameters('debian-installer', '/d.iso'), []);
  assert.deepEqual(isoBootParameters('unknown', '/x.iso'), []);
  assert.throws(() => isoBootParameters('arch', '/a.iso'), (e: StiefelError) => e.code === 'E_ISO_DEVICE' && /img_dev/.test(e.message));
  assert.throws(() => isoBootParameters('debian-live', 'relative.iso'), (e: StiefelError) => e.code === 'E_ISO_PATH');
  assert.throws(() => isoBootParameters('debian-live', '/with blank.iso'), (e: StiefelError) => e.code === 'E_ISO_PATH');
  // Every rule's parameters use only the placeholders isoBootParameters fills in.
  for (const r of ISO_DISTROS) for (const p of r.parameters) assert.match(p, /^[\w./-]+(=(PATH|DEVICE))?$/, `${r.id}: ${p}`);
});

test('the parameters replace the same keys already on the command line', () => {
  assert.equal(withIsoParameters('boot=live components findiso= quiet', ['findiso=/d.iso']), 'boot=live components quiet findiso=/d.iso');
  assert.equal(withIsoParameters('root=live:CDLABEL=F rd.live.image quiet', ['iso-scan/filename=/f.iso', 'rd.live.image']), 'root=live:CDLABEL=F quiet iso-scan/filename=/f.iso rd.live.image');
  assert.equal(withIsoParameters('', []), '');
});
