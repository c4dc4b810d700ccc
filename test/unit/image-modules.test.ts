import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../../src/errors';
import { silentLogger } from '../../src/log';
import { parseModulesDep } from '../../src/kmod/depmod-files';
import { carryModuleDecompressed, imageModulePath, regenerateDepmod, selectModules } from '../../src/image/modules';
import { MODULE_GROUPS } from '../../src/image/module-groups';
import { requireTool } from '../helpers/tools';
import { debianKernel, hostModulePath } from '../helpers/kernel';

const RELEASE = debianKernel().release;
const MODULES = `/lib/modules/${RELEASE}`;
/** A module's path as the installed kernel's modules.dep names it. */
const mod = (name: string): string => hostModulePath(name);
const work = mkdtempSync(join(tmpdir(), 'stf5-modules-'));
after(() => rmSync(work, { recursive: true, force: true }));

test('declared firmware goes in when installed (also compressed), and the rest is listed as missing', async () => {
  const fw = join(work, 'firmware');
  mkdirSync(join(fw, 'rtl_nic'), { recursive: true });
  writeFileSync(join(fw, 'rtl_nic/rtl8168h-2.fw'), 'fake firmware');
  writeFileSync(join(fw, 'rtl_nic/rtl8125b-2.fw.zst'), 'fake compressed firmware');
  // A second, compressed copy of the same firmware is not carried: the kernel tries the plain name first.
  writeFileSync(join(fw, 'rtl_nic/rtl8168h-2.fw.xz'), 'fake compressed copy');
  const s = await selectModules({ release: RELEASE, modulesDir: MODULES, firmwareDir: fw, groups: [{ name: 'test', names: ['r8169'] }] }, silentLogger);
  // r8169 with its dependency libphy and its soft dependency, the Realtek PHY driver.
  assert.deepEqual(s.paths, ['r8169', 'libphy', 'mdio_devres', 'realtek'].map((name) => hostModulePath(name)).sort());
  assert.deepEqual(
    s.firmware.map((f) => f.name),
    ['rtl_nic/rtl8125b-2.fw.zst', 'rtl_nic/rtl8168h-2.fw'],
  );
  assert.equal(s.firmware[1]!.hostPath, join(fw, 'rtl_nic/rtl8168h-2.fw'));
  assert.ok(s.firmwareMissing.includes('rtl_nic/rtl8168g-2.fw'));
  assert.ok(!s.firmwareMissing.includes('rtl_nic/rtl8168h-2.fw'));
});

test('the default groups carry every Ethernet and USB-network driver, nbd and wireguard', async () => {
  const s = await selectModules({ release: RELEASE, modulesDir: MODULES }, silentLogger);
  const dep = parseModulesDep(readFileSync(`${MODULES}/modules.dep`, 'utf8'));
  for (const p of dep.keys()) {
    if (p.startsWith('kernel/drivers/net/ethernet/') || p.startsWith('kernel/drivers/net/usb/')) assert.ok(s.paths.includes(p), p);
  }
  for (const m of ['nbd', 'wireguard', 'xfs', 'dm_crypt', 'nvme'].map((name) => hostModulePath(name))) {
    assert.ok(s.paths.includes(m), m);
  }
  // Every dependency of every chosen module is chosen too.
  for (const p of s.paths) for (const d of dep.get(p)!) assert.ok(s.paths.includes(d), `${p} needs ${d}`);
  assert.ok(s.builtin.includes('af_packet'));
  assert.ok(MODULE_GROUPS.some((g) => g.required?.includes('wireguard')));
});

test('a required module the kernel lacks fails the build; an optional one is only listed', async () => {
  await assert.rejects(
    selectModules({ release: RELEASE, modulesDir: MODULES, groups: [{ name: 'test', required: ['stf5_missing'] }] }, silentLogger),
    (e: unknown) => e instanceof StiefelError && e.message.includes(`module 'stf5_missing' does not exist for kernel ${RELEASE}`),
  );
  const s = await selectModules({ release: RELEASE, modulesDir: MODULES, groups: [{ name: 'test', names: ['stf5_optional', 'nbd'] }] }, silentLogger);
  assert.deepEqual(s.absent, ['stf5_optional']);
  assert.deepEqual(s.paths, [hostModulePath('nbd')]);
});

test('depmod data regenerated for a subset names exactly that subset, the same way twice', async () => {
  const depmod = requireTool('depmod');
  const paths = [mod('nbd'), mod('virtio_net'), mod('net_failover'), mod('failover'), mod('virtio'), mod('virtio_ring')];
  const run = (n: number) => regenerateDepmod({ release: RELEASE, modulesDir: MODULES, paths, stagingDir: join(work, `stage${n}`), depmod });
  const a = await run(1);
  const b = await run(2);
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, v] of a) assert.ok(v.equals(b.get(k)!), `${k} is the same in both runs`);
  const dep = parseModulesDep(a.get('modules.dep')!.toString());
  assert.deepEqual([...dep.keys()].sort(), [...paths].sort());
  assert.deepEqual(dep.get(mod('virtio_net'))!.sort(), [mod('net_failover'), mod('virtio'), mod('virtio_ring'), mod('failover')].sort());
  const alias = a.get('modules.alias')!.toString();
  assert.match(alias, /^alias virtio:d00000001v\* virtio_net$/m);
  assert.doesNotMatch(alias, /e1000e/);
  for (const bin of ['modules.dep.bin', 'modules.alias.bin', 'modules.symbols.bin']) assert.ok(a.has(bin), bin);
  assert.equal(a.get('modules.order')!.toString().trim().split('\n').length, paths.length);
});

test('--exclude-module leaves out modules by name or directory, but not what stiefelOS or other modules need', async () => {
  const s = await selectModules(
    { release: RELEASE, modulesDir: MODULES, excludeModules: ['kernel/drivers/net/ethernet/mellanox/', 'e1000e', 'libphy'] },
    silentLogger,
  );
  assert.ok(!s.paths.some((p) => p.includes('/mellanox/')));
  assert.ok(!s.paths.includes(mod('e1000e')));
  assert.ok(s.paths.includes(mod('libphy')), 'libphy stays: r8169 and others need it');
  assert.ok(s.excluded.includes(mod('e1000e')));
  assert.ok(!s.excluded.includes(mod('libphy')));
  await assert.rejects(selectModules({ release: RELEASE, modulesDir: MODULES, excludeModules: ['nbd'] }, silentLogger), /would leave out kernel\/drivers\/block\/nbd\.ko, which stiefelOS needs/);
  await assert.rejects(selectModules({ release: RELEASE, modulesDir: MODULES, excludeModules: ['stf5_nothing'] }, silentLogger), /--exclude-module stf5_nothing matches no module/);
});

test('compressed modules (.ko.zst, as Arch ships them) are read, closed over and indexed', async () => {
  const zstd = requireTool('zstd');
  const depmod = requireTool('depmod');
  const dir = join(work, 'zst-modules');
  const real = readFileSync(`${MODULES}/modules.dep`, 'utf8');
  const wanted = [mod('r8169'), mod('libphy'), mod('mdio_devres'), mod('realtek'), mod('nbd')];
  const lines = real.split('\n').filter((l) => wanted.includes(l.split(':')[0]!));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'modules.dep'), `${lines.map((l) => l.replace(/\.ko\b/g, '.ko.zst')).join('\n')}\n`);
  writeFileSync(join(dir, 'modules.softdep'), 'softdep r8169 pre: realtek\n');
  for (const p of wanted) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    execFileSync(zstd, ['-q', '-19', `${MODULES}/${p}`, '-o', join(dir, `${p}.zst`)]);
  }
  const fw = join(work, 'zst-firmware');
  mkdirSync(join(fw, 'rtl_nic'), { recursive: true });
  writeFileSync(join(fw, 'rtl_nic/rtl8168h-2.fw'), 'fake firmware');
  const s = await selectModules({ release: RELEASE, modulesDir: dir, firmwareDir: fw, groups: [{ name: 'test', names: ['r8169'], required: ['nbd'] }] }, silentLogger);
  assert.deepEqual(s.paths, [...wanted].sort().map((p) => `${p}.zst`));
  assert.deepEqual(s.firmware.map((f) => f.name), ['rtl_nic/rtl8168h-2.fw']);
  const files = await regenerateDepmod({ release: RELEASE, modulesDir: dir, paths: s.paths, stagingDir: join(work, 'zst-stage'), depmod });
  const dep = parseModulesDep(files.get('modules.dep')!.toString());
  assert.deepEqual([...dep.keys()].sort(), s.paths);
  assert.match(files.get('modules.alias')!.toString(), / r8169$/m);
  // The image carries them decompressed: the selection holds the original
  // bytes, and depmod's data names the plain .ko files.
  assert.deepEqual([...s.decompressed.keys()].sort(), s.paths);
  for (const p of wanted) assert.ok(s.decompressed.get(`${p}.zst`)!.equals(readFileSync(`${MODULES}/${p}`)), `${p} decompressed`);
  const plain = await regenerateDepmod({ release: RELEASE, modulesDir: dir, paths: s.paths, decompressed: s.decompressed, stagingDir: join(work, 'zst-stage-plain'), depmod });
  const plainDep = parseModulesDep(plain.get('modules.dep')!.toString());
  assert.deepEqual([...plainDep.keys()].sort(), [...wanted].sort());
  assert.deepEqual(plainDep.get(mod('r8169'))!.sort(), [mod('libphy'), mod('mdio_devres')]);
});

test('uncompressed modules are carried as they are: nothing is decompressed', async () => {
  const s = await selectModules({ release: RELEASE, modulesDir: MODULES, groups: [{ name: 'test', names: ['nbd'] }] }, silentLogger);
  assert.deepEqual(s.paths, [hostModulePath('nbd')]);
  assert.equal(s.decompressed.size, 0);
});

test('which compressed modules the image carries decompressed, by the outer compression (measured: BENCHMARKS.md)', () => {
  const p = mod('nbd');
  // Under zstd: per-module zstd and gzip lose to the outer zstd; per-module xz wins.
  assert.equal(carryModuleDecompressed(`${p}.zst`, 'zstd'), true);
  assert.equal(carryModuleDecompressed(`${p}.gz`, 'zstd'), true);
  assert.equal(carryModuleDecompressed(`${p}.xz`, 'zstd'), false);
  // Under gzip only gzip is undone; without outer compression nothing is.
  assert.equal(carryModuleDecompressed(`${p}.gz`, 'gzip'), true);
  assert.equal(carryModuleDecompressed(`${p}.zst`, 'gzip'), false);
  for (const ext of ['gz', 'xz', 'zst']) assert.equal(carryModuleDecompressed(`${p}.${ext}`, 'none'), false);
  assert.equal(carryModuleDecompressed(p, 'zstd'), false);
  assert.equal(imageModulePath(`${p}.zst`), p);
  assert.equal(imageModulePath(p), p);
});
