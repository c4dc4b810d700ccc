// The exact LUKS, LVM, loop and mount command sequences, and that every exit
// path undoes what was done, last first. A scripted runner stands in for
// cryptsetup and lvm because this host's kernel has no device-mapper; the
// same code runs against the real tools, LUKS2 and LVM inside a VM in
// test/vm/boot-entries-luks-lvm.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StiefelError } from '../../src/errors';
import { silentLogger } from '../../src/log';
import { CleanupStack } from '../../src/disk/cleanup';
import { openLuks } from '../../src/disk/luks';
import { activateVolumeGroup, LVM_READ_ONLY_CONFIG } from '../../src/disk/lvm';
import { attachLoop, mountReadOnly } from '../../src/disk/mount';
import type { CommandRunner, RunResult } from '../../src/disk/runner';
import type { PassphraseProvider } from '../../src/disk/passphrase';

type Script = (file: string, args: readonly string[], input: string) => Partial<RunResult>;

function scripted(script: Script): CommandRunner & { calls: { cmd: string; input: string }[] } {
  const calls: { cmd: string; input: string }[] = [];
  return {
    calls,
    async run(file, args, options = {}) {
      const input = options.input === undefined ? '' : String(options.input);
      calls.push({ cmd: [file, ...args].join(' '), input });
      const r = script(file, args, input);
      return { code: r.code ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    },
  };
}

function answers(...list: string[]): PassphraseProvider & { asked: string[] } {
  const asked: string[] = [];
  return {
    attempts: 3,
    asked,
    async ask(q) {
      asked.push(q);
      const a = list.shift();
      if (a === undefined) throw new StiefelError('E_INTERRUPTED', 'no more answers');
      return a;
    },
  };
}

const CFG = ['--config', LVM_READ_ONLY_CONFIG];

test('LUKS: read-only open with the passphrase on stdin, asked again when wrong, closed on cleanup', async () => {
  const runner = scripted((file, args, input) => (file === 'cryptsetup' && args[0] === 'open' ? { code: input === 'right' ? 0 : 2, stderr: 'No key available with this passphrase.' } : {}));
  const cleanup = new CleanupStack(silentLogger);
  const pass = answers('wrong', 'right');
  const mapped = await openLuks('/dev/loop7', { runner, cleanup, passphrase: pass, name: 'stf4-luks-1', label: 'disk.img#3' });
  assert.equal(mapped, '/dev/mapper/stf4-luks-1');
  assert.deepEqual(runner.calls, [
    { cmd: 'cryptsetup open --readonly --type luks --key-file=- /dev/loop7 stf4-luks-1', input: 'wrong' },
    { cmd: 'cryptsetup open --readonly --type luks --key-file=- /dev/loop7 stf4-luks-1', input: 'right' },
  ]);
  assert.match(pass.asked[0]!, /disk\.img#3/);
  assert.match(pass.asked[1]!, /Wrong passphrase, try again \(2 of 3\)/);
  await cleanup.run();
  assert.equal(runner.calls.at(-1)!.cmd, 'cryptsetup close stf4-luks-1');
});

test('LUKS: attempts run out, or cryptsetup fails otherwise: nothing is left open', async () => {
  const runner = scripted(() => ({ code: 2 }));
  const cleanup = new CleanupStack(silentLogger);
  await assert.rejects(
    openLuks('/dev/loop7', { runner, cleanup, passphrase: answers('a', 'b', 'c'), name: 'n', label: 'disk.img#2' }),
    (e: StiefelError) => e.code === 'E_LUKS_PASSPHRASE' && e.message === 'the passphrase given does not open disk.img#2 (LUKS) (3 attempts)',
  );
  assert.equal(runner.calls.length, 3);
  // A provider that says where its answer came from (a file) is named, with its fix.
  const fromFile = { attempts: 1, origin: 'the passphrase in /root/pw', hint: 'check the file', ask: async () => 'x' };
  await assert.rejects(openLuks('/dev/loop7', { runner, cleanup, passphrase: fromFile, name: 'n', label: '/dev/vda2' }), {
    message: 'the passphrase in /root/pw does not open /dev/vda2 (LUKS): check the file',
  });
  assert.equal(cleanup.size, 0);
  const broken = scripted(() => ({ code: 1, stderr: 'Device /dev/loop7 is not a valid LUKS device.' }));
  await assert.rejects(openLuks('/dev/loop7', { runner: broken, cleanup, passphrase: answers('a'), name: 'n', label: 'x' }), /not a valid LUKS device/);
  assert.equal(cleanup.size, 0);
});

const PVS = ['pvs', '--devices', '/dev/loop3', ...CFG, '--reportformat', 'json', '-o', 'pv_name,vg_name'].join(' ');
const LVS = ['lvs', '--devices', '/dev/loop3', ...CFG, '--reportformat', 'json', '-o', 'lv_name,vg_name,lv_path,lv_size,lv_active', '--units', 'b', '--nosuffix'].join(' ');
const vgchange = (how: 'y' | 'n') => ['vgchange', '--devices', '/dev/loop3', ...CFG, '--activate', how, 'vg0'].join(' ');
const pvReport = JSON.stringify({ report: [{ pv: [{ pv_name: '/dev/loop3', vg_name: 'vg0' }] }] });
const lvReport = (active: string) =>
  JSON.stringify({ report: [{ lv: [{ lv_name: 'root', vg_name: 'vg0', lv_path: '/dev/vg0/root', lv_size: '1073741824', lv_active: active }, { lv_name: 'boot', vg_name: 'vg0', lv_path: '/dev/vg0/boot', lv_size: '536870912', lv_active: '' }] }] });

test('LVM: activate only our device read-only, list the volumes, deactivate on cleanup', async () => {
  const runner = scripted((file) => {
    if (file === 'pvs') return { stdout: pvReport };
    if (file === 'lvs') return { stdout: lvReport('') };
    return {};
  });
  const cleanup = new CleanupStack(silentLogger);
  const lvs = await activateVolumeGroup('/dev/loop3', { runner, cleanup });
  assert.deepEqual(lvs.map((l) => [l.path, l.size, l.wasActive]), [['/dev/vg0/root', 1073741824, false], ['/dev/vg0/boot', 536870912, false]]);
  await cleanup.run();
  assert.deepEqual(runner.calls.map((c) => c.cmd), [PVS, LVS, vgchange('y'), vgchange('n')]);
  assert.match(LVM_READ_ONLY_CONFIG, /metadata_read_only = 1/);
  assert.match(LVM_READ_ONLY_CONFIG, /read_only_volume_list/);
});

test('LVM: a volume group active already (the running OS uses it) is read as it is and never deactivated', async () => {
  const runner = scripted((file) => {
    if (file === 'pvs') return { stdout: pvReport };
    if (file === 'lvs') return { stdout: lvReport('active') };
    return {};
  });
  const cleanup = new CleanupStack(silentLogger);
  const lvs = await activateVolumeGroup('/dev/loop3', { runner, cleanup });
  assert.deepEqual(lvs.map((l) => [l.path, l.wasActive]), [['/dev/vg0/root', true]]);
  assert.equal(cleanup.size, 0);
  await cleanup.run();
  assert.deepEqual(runner.calls.map((c) => c.cmd), [PVS, LVS]);
});

test('LVM: a failing activation still deactivates (it may have activated some volumes)', async () => {
  const runner = scripted((file, args) => {
    if (file === 'pvs') return { stdout: pvReport };
    if (file === 'lvs') return { stdout: lvReport('') };
    if (file === 'vgchange' && args.includes('y')) return { code: 5, stderr: 'device-mapper: reload ioctl failed\n  1 logical volume(s) in volume group "vg0" now active' };
    return {};
  });
  const cleanup = new CleanupStack(silentLogger);
  await assert.rejects(activateVolumeGroup('/dev/loop3', { runner, cleanup }), /vgchange .* failed: .*now active/);
  await cleanup.run();
  assert.equal(runner.calls.at(-1)!.cmd, vgchange('n'));
});

test('LVM: an unreadable report fails before anything is activated', async () => {
  const runner = scripted((file) => {
    if (file === 'pvs') return { stdout: pvReport };
    if (file === 'lvs') return { code: 5, stderr: 'Volume group "vg0" not found' };
    return {};
  });
  const cleanup = new CleanupStack(silentLogger);
  await assert.rejects(activateVolumeGroup('/dev/loop3', { runner, cleanup }), /lvs .* failed: Volume group "vg0" not found/);
  assert.equal(cleanup.size, 0);
  assert.deepEqual(runner.calls.map((c) => c.cmd), [PVS, LVS]);
});

test('loop + LUKS + LVM + mount: a failing mount undoes everything in reverse order', async () => {
  let loops = 0;
  const runner = scripted((file, args) => {
    if (file === 'losetup' && args[0] === '--find') return { stdout: `/dev/loop${loops++}\n` };
    if (file === 'pvs') return { stdout: JSON.stringify({ report: [{ pv: [{ pv_name: 'x', vg_name: 'vg0' }] }] }) };
    if (file === 'lvs') return { stdout: JSON.stringify({ report: [{ lv: [{ lv_name: 'boot', vg_name: 'vg0', lv_path: '/dev/vg0/boot', lv_size: '1' }] }] }) };
    if (file === 'mount') return { code: 32, stderr: 'mount: wrong fs type\nmore' };
    return {};
  });
  const cleanup = new CleanupStack(silentLogger);
  const o = { runner, cleanup };
  const loop = await attachLoop('/img/disk.img', 1048576, 8388608, o);
  const mapped = await openLuks(loop, { ...o, passphrase: answers('pw'), name: 'stf4-luks-9', label: 'p3' });
  const lvs = await activateVolumeGroup(mapped, o);
  await assert.rejects(mountReadOnly(lvs[0]!.path, 'ext', o), (e: StiefelError) => e.code === 'E_MOUNT' && !e.message.includes('\n'));
  runner.calls.length = 0;
  const failed = await cleanup.run();
  assert.deepEqual(failed, []);
  assert.deepEqual(runner.calls.map((c) => c.cmd.split(' ').filter((w) => !w.startsWith('global')).slice(0, 2).join(' ')), [
    'vgchange --devices',
    'cryptsetup close',
    'losetup --detach',
  ]);
  assert.equal(cleanup.size, 0);
});

test('loop: a device losetup printed is detached even when losetup then failed; mount options are read-only', async () => {
  const runner = scripted((file, args) => (file === 'losetup' && args[0] === '--find' ? { code: 1, stdout: '/dev/loop4\n', stderr: 'losetup: failed to set up loop device' } : {}));
  const cleanup = new CleanupStack(silentLogger);
  await assert.rejects(attachLoop('/img', 0, 512, { runner, cleanup }), /failed to set up loop device/);
  assert.equal(runner.calls[0]!.cmd, 'losetup --find --show --read-only --offset 0 --sizelimit 512 /img');
  await cleanup.run();
  assert.equal(runner.calls.at(-1)!.cmd, 'losetup --detach /dev/loop4');
  const ok = scripted(() => ({}));
  const c2 = new CleanupStack(silentLogger);
  const dir = await mountReadOnly('/dev/loop4', 'xfs', { runner: ok, cleanup: c2 });
  assert.match(ok.calls[0]!.cmd, new RegExp(`^mount -t xfs -o ro,norecovery /dev/loop4 ${dir}$`));
  await c2.run();
  assert.equal(ok.calls[1]!.cmd, `umount ${dir}`);
});
