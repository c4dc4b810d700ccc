import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { buildModuleIndex, moduleClosure, resolveModule } from '../../src/kmod/closure';
import {
  builtinAliases,
  DepmodParseError,
  filterModulesOrder,
  moduleNameFromPath,
  parseModinfo,
  parseModulesAlias,
  parseModulesDep,
  parseModulesSoftdep,
} from '../../src/kmod/depmod-files';
import { requireTool } from '../helpers/tools';
import { debianKernel } from '../helpers/kernel';

const FIXTURE = join(__dirname, 'fixtures', 'kmod');
const RELEASE = debianKernel().release;
const REAL = `/lib/modules/${RELEASE}`;

function fixtureIndex() {
  const read = (n: string): string => readFileSync(join(FIXTURE, n), 'utf8');
  return buildModuleIndex({ dep: read('modules.dep'), alias: read('modules.alias'), softdep: read('modules.softdep'), builtin: read('modules.builtin') });
}

test('module names come from paths the way the kernel names them', () => {
  assert.equal(moduleNameFromPath('kernel/drivers/md/dm-crypt.ko'), 'dm_crypt');
  assert.equal(moduleNameFromPath('kernel/drivers/net/virtio_net.ko.xz'), 'virtio_net');
  assert.equal(moduleNameFromPath('updates/dkms/wireguard.ko.zst'), 'wireguard');
});

test('closure over a real modules.dep excerpt: hard and soft dependencies', () => {
  const index = fixtureIndex();
  const closureOf = (name: string): string[] => moduleClosure(index, resolveModule(index, name).paths).paths;
  // ext4 needs crc16, mbcache, jbd2; both ext4 and jbd2 soft-depend on crypto-crc32c,
  // which two modules provide (modprobe loads every module behind an alias).
  assert.deepEqual(closureOf('ext4'), [
    'kernel/arch/x86/crypto/crc32c-intel.ko',
    'kernel/crypto/crc32c_generic.ko',
    'kernel/fs/ext4/ext4.ko',
    'kernel/fs/jbd2/jbd2.ko',
    'kernel/fs/mbcache.ko',
    'kernel/lib/crc16.ko',
  ]);
  assert.deepEqual(closureOf('dm-crypt'), ['kernel/drivers/md/dm-crypt.ko', 'kernel/drivers/md/dm-mod.ko']);
  assert.deepEqual(closureOf('wireguard').length, 9);
  assert.deepEqual(closureOf('nbd'), ['kernel/drivers/block/nbd.ko']);
});

test('names resolve to modules, exact aliases, or built-ins', () => {
  const index = fixtureIndex();
  assert.deepEqual(resolveModule(index, 'dm_crypt'), { paths: ['kernel/drivers/md/dm-crypt.ko'], builtin: false });
  assert.deepEqual(resolveModule(index, 'crc32c').paths, ['kernel/arch/x86/crypto/crc32c-intel.ko', 'kernel/crypto/crc32c_generic.ko']);
  assert.deepEqual(resolveModule(index, 'aes_generic'), { paths: [], builtin: true });
  assert.deepEqual(resolveModule(index, 'stf5_no_such_module'), { paths: [], builtin: false });
  // Device patterns are not names.
  assert.deepEqual(resolveModule(index, 'virtio:d00000001v*'), { paths: [], builtin: false });
});

/** The module files `modprobe --show-depends NAME` would insmod, relative to the modules directory. */
function showDepends(name: string): string[] {
  return execFileSync('modprobe', ['--show-depends', '-S', RELEASE, name], { encoding: 'utf8' })
    .split('\n')
    .flatMap((l) => {
      const m = /^insmod \S*?\/lib\/modules\/[^/]+\/(\S+)/.exec(l.trim());
      return m ? [m[1]!] : [];
    });
}

test('closure over the real modules.dep of the Debian kernel matches modprobe --show-depends', () => {
  requireTool('modprobe');
  const index = buildModuleIndex({
    dep: readFileSync(`${REAL}/modules.dep`, 'utf8'),
    alias: readFileSync(`${REAL}/modules.alias`, 'utf8'),
    softdep: readFileSync(`${REAL}/modules.softdep`, 'utf8'),
    builtin: readFileSync(`${REAL}/modules.builtin`, 'utf8'),
    builtinModinfo: readFileSync(`${REAL}/modules.builtin.modinfo`),
  });
  assert.ok(index.deps.size > 3000);
  for (const name of ['ext4', 'btrfs', 'xfs', 'vfat', 'nbd', 'wireguard', 'dm_crypt', 'virtio_net', 'e1000e', 'r8152', 'mlx5_core', 'thunderbolt_net', 'xhci_pci', 'usb_storage', 'aesni_intel']) {
    const ours = moduleClosure(index, resolveModule(index, name).paths).paths;
    const shown = new Set(showDepends(name));
    // kmod's modprobe uses only the first `softdep` line of a module (btrfs has
    // three: blake2b-256, sha256, xxhash64); the kernel asks for the others with
    // request_module() when a file system needs them, so the image carries them.
    const softExtra = new Set(
      [...(index.softdeps.get(name) ? [...index.softdeps.get(name)!.pre, ...index.softdeps.get(name)!.post] : [])].flatMap(showDepends),
    );
    for (const p of shown) assert.ok(ours.includes(p), `${name}: modprobe loads ${p}, our closure lacks it`);
    for (const p of ours) assert.ok(shown.has(p) || softExtra.has(p), `${name}: our closure has ${p}, which modprobe would not load`);
  }
  const btrfs = moduleClosure(index, resolveModule(index, 'btrfs').paths).paths;
  assert.ok(btrfs.includes('kernel/crypto/xxhash_generic.ko'));
});

test('softdep lines: pre, post, and names before any keyword', () => {
  const s = parseModulesSoftdep('softdep btrfs pre: blake2b-256 sha256 post: foo\nsoftdep cifs gcm\nsoftdep cifs ccm\n');
  assert.deepEqual(s.get('btrfs'), { pre: ['blake2b-256', 'sha256'], post: ['foo'] });
  assert.deepEqual(s.get('cifs'), { pre: ['gcm', 'ccm'], post: [] });
});

test('modules.order is filtered to the chosen modules in kernel order, .ko.xz or not', () => {
  const order = 'kernel/a.ko\nkernel/b.ko\nkernel/c.ko\n';
  assert.equal(filterModulesOrder(order, ['kernel/c.ko.xz', 'kernel/a.ko']), 'kernel/a.ko\nkernel/c.ko\n');
});

test('built-in aliases come from modules.builtin.modinfo', () => {
  const bytes = Buffer.from('aes_generic.alias=crypto-aes\0aes_generic.license=GPL\0crc32c_generic.alias=crc32c\0junk\0');
  assert.deepEqual(builtinAliases(bytes), [
    { pattern: 'crypto-aes', module: 'aes_generic' },
    { pattern: 'crc32c', module: 'crc32c_generic' },
  ]);
  assert.deepEqual(parseModinfo(Buffer.from('a=1\0\0\0b=x=y\0')), [
    { key: 'a', value: '1' },
    { key: 'b', value: 'x=y' },
  ]);
});

test('malformed depmod files are DepmodParseErrors with the line number', () => {
  assert.throws(() => parseModulesDep('kernel/a.ko:\nno colon here\n'), /line 2/);
  assert.throws(() => parseModulesDep('kernel/a.txt: kernel/b.ko\n'), DepmodParseError);
  assert.throws(() => parseModulesAlias('alias onlytwo\n'), DepmodParseError);
  assert.throws(() => parseModulesSoftdep('softdep\n'), DepmodParseError);
  const index = buildModuleIndex({ dep: 'kernel/a.ko: kernel/missing.ko\n' });
  assert.throws(() => moduleClosure(index, ['kernel/a.ko']), DepmodParseError);
});

test('property: depmod parsers throw nothing but DepmodParseError', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 200 }), (text) => {
      for (const parse of [parseModulesDep, parseModulesAlias, parseModulesSoftdep]) {
        try {
          parse(text);
        } catch (err) {
          if (!(err instanceof DepmodParseError)) throw err;
        }
      }
    }),
    { numRuns: 1000 },
  );
});
