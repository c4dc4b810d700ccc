import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { unifiedDiff } from '../../src/server-os/diff';
import {
  ATTACH_PATH,
  RECONNECT_PATH,
  BOOT_RECORD_PATH,
  KERNEL_POSTINST_PATH,
  LOCAL_UNIT_PATH,
  WATCH_UNIT,
  localUnitPath,
  SHUTDOWN_HOOK_PATH,
  addMkinitcpioHook,
  cleanCmdline,
  desiredFiles,
  grubDefaultCmdline,
  planChanges,
  removeMkinitcpioHook,
  rootFromFstab,
  type CurrentFile,
} from '../../src/server-os/plan';
import { applyServerOs, planServerOs } from '../../src/server-os/setup';
import type { CommandRunner } from '../../src/disk/runner';
import { silentLogger } from '../../src/log';
import { readAsset } from '../../src/assets';
import { StiefelError } from '../../src/errors';
import { runCli } from '../helpers/cli';
import { requireTool } from '../helpers/tools';

// A system with the Debian package's unit and no boot loader that takes an entry.
const noNetworkManagers = { networkManager: false, networkd: false, mkinitcpioConf: null, bootMenu: { kind: 'none', why: 'test' } as const, packagedUnit: true };

test('unified diff: GNU patch turns the old text into the new one with it', () => {
  requireTool('patch');
  const dir = mkdtempSync(join(tmpdir(), 'stf6-diff-'));
  try {
    const line = fc.constantFrom('a', 'b', 'c', 'd', 'e', '', 'x y');
    const text = fc.array(line, { maxLength: 30 }).map((l) => (l.length ? `${l.join('\n')}\n` : ''));
    fc.assert(
      fc.property(text, text, (before, after) => {
        fc.pre(before !== after);
        writeFileSync(join(dir, 'old'), before);
        writeFileSync(join(dir, 'fix.diff'), unifiedDiff('/old', before, after));
        rmSync(join(dir, 'new'), { force: true });
        const r = spawnSync('patch', ['-s', '-o', join(dir, 'new'), join(dir, 'old'), join(dir, 'fix.diff')], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.equal(readFileSync(join(dir, 'new'), 'utf8'), after);
      }),
      { numRuns: 200 },
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unified diff: the same hunks as GNU diff -u for a simple change', () => {
  requireTool('diff');
  const dir = mkdtempSync(join(tmpdir(), 'stf6-diff-'));
  try {
    const before = 'one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n';
    const after = 'one\ntwo\nTHREE\nfour\nfive\nsix\nseven\neight\nnine\nten\neleven\n';
    writeFileSync(join(dir, 'a'), before);
    writeFileSync(join(dir, 'b'), after);
    const gnu = spawnSync('diff', ['-u', join(dir, 'a'), join(dir, 'b')], { encoding: 'utf8' }).stdout;
    const body = (d: string): string => d.split('\n').filter((l) => !l.startsWith('---') && !l.startsWith('+++')).join('\n');
    assert.equal(body(unifiedDiff('/x', before, after)), body(gnu));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unified diff of a new file shows every line added from /dev/null', () => {
  assert.equal(unifiedDiff('/etc/x', null, 'one\ntwo\n'), '--- /dev/null\n+++ b/etc/x\n@@ -0,0 +1,2 @@\n+one\n+two\n');
  assert.equal(unifiedDiff('/etc/x', 'same\n', 'same\n'), '');
});

test('each family gets the shared attach script, its own adapter, and the boot record', () => {
  const record = (family: 'initramfs-tools' | 'dracut' | 'mkinitcpio') => ({ family, cmdline: 'root=UUID=1 ro' });
  const present = (family: 'initramfs-tools' | 'dracut' | 'mkinitcpio') =>
    desiredFiles(record(family), { ...noNetworkManagers, mkinitcpioConf: family === 'mkinitcpio' ? 'HOOKS=(base udev block filesystems fsck)\n' : null })
      .filter((f) => f.content !== null)
      .map((f) => f.path)
      .sort();
  assert.deepEqual(present('initramfs-tools'), [
    BOOT_RECORD_PATH,
    '/etc/initramfs-tools/hooks/stiefelsystem',
    '/etc/initramfs-tools/scripts/local-top/stiefelsystem',
    ATTACH_PATH,
    RECONNECT_PATH,
    KERNEL_POSTINST_PATH,
    SHUTDOWN_HOOK_PATH,
  ].sort());
  assert.deepEqual(present('dracut'), [
    BOOT_RECORD_PATH,
    '/etc/dracut.conf.d/stiefelsystem.conf',
    ATTACH_PATH,
    RECONNECT_PATH,
    '/usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh',
    '/usr/lib/dracut/modules.d/90stiefelsystem/stiefel-cmdline.sh',
    KERNEL_POSTINST_PATH,
    SHUTDOWN_HOOK_PATH,
  ].sort());
  assert.deepEqual(present('mkinitcpio'), [
    BOOT_RECORD_PATH,
    '/etc/initcpio/hooks/stiefelsystem',
    '/etc/initcpio/install/stiefelsystem',
    '/etc/mkinitcpio.conf',
    ATTACH_PATH,
    RECONNECT_PATH,
    KERNEL_POSTINST_PATH,
    SHUTDOWN_HOOK_PATH,
  ].sort());
  const withManagers = desiredFiles(record('dracut'), { ...noNetworkManagers, networkManager: true, networkd: true });
  assert.ok(withManagers.some((f) => f.path === '/etc/NetworkManager/conf.d/stiefelsystem.conf' && f.content?.includes('unmanaged-devices=interface-name:stiefellink')));
  assert.ok(withManagers.some((f) => f.path === '/etc/systemd/network/00-stiefelsystem.network' && f.content?.includes('Unmanaged=yes')));
});

test("with the Debian package installed, its files are its own: never written or removed, and an /etc copy of a /usr/share adapter goes", () => {
  const record = { family: 'initramfs-tools' as const, cmdline: 'root=UUID=1 ro' };
  const packaged = new Set([ATTACH_PATH, '/usr/share/initramfs-tools/hooks/stiefelsystem', '/usr/share/initramfs-tools/scripts/local-top/stiefelsystem', '/usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh', '/usr/lib/dracut/modules.d/90stiefelsystem/stiefel-cmdline.sh']);
  const facts = { ...noNetworkManagers, packaged };
  const desired = desiredFiles(record, facts);
  for (const p of packaged) assert.ok(!desired.some((d) => d.path === p), `${p} is left to the package`);
  assert.equal(desired.find((d) => d.path === '/etc/initramfs-tools/hooks/stiefelsystem')?.content, null);
  assert.equal(desired.find((d) => d.path === '/etc/initramfs-tools/scripts/local-top/stiefelsystem')?.content, null);
  assert.ok(desired.find((d) => d.path === BOOT_RECORD_PATH)?.content);
  // Uninstalling does not touch them either.
  for (const p of packaged) assert.ok(!desiredFiles(null, facts).some((d) => d.path === p));
});

test('planning is idempotent, and uninstalling removes every file', () => {
  const record = { family: 'initramfs-tools' as const, cmdline: 'root=UUID=1 ro' };
  const desired = desiredFiles(record, noNetworkManagers);
  const empty = new Map<string, CurrentFile>();
  const first = planChanges(desired, empty);
  assert.ok(first.length >= 4);
  assert.ok(first.every((c) => c.before === null && c.after !== null));
  const installed = new Map(desired.map((d) => [d.path, { content: d.content, mode: d.content === null ? null : d.mode }]));
  assert.deepEqual(planChanges(desired, installed), []);
  const uninstall = planChanges(desiredFiles(null, noNetworkManagers), installed);
  assert.equal(uninstall.length, first.length);
  assert.ok(uninstall.every((c) => c.after === null));
  // A switch to dracut removes the initramfs-tools adapter.
  const toDracut = planChanges(desiredFiles({ ...record, family: 'dracut' }, noNetworkManagers), installed);
  assert.ok(toDracut.some((c) => c.path === '/etc/initramfs-tools/hooks/stiefelsystem' && c.after === null));
});

test('mkinitcpio HOOKS: our hook goes before filesystems, once, and comes out again', () => {
  const conf = '# comment\nMODULES=()\nHOOKS=(base udev autodetect modconf block filesystems keyboard fsck)\n';
  const added = addMkinitcpioHook(conf);
  assert.match(added, /^HOOKS=\(base udev autodetect modconf block stiefelsystem filesystems keyboard fsck\)$/m);
  assert.equal(addMkinitcpioHook(added), added);
  assert.equal(removeMkinitcpioHook(added), conf);
  assert.throws(() => addMkinitcpioHook('HOOKS=(base systemd autodetect block filesystems)\n'), /systemd-based initramfs/);
  assert.throws(() => addMkinitcpioHook('MODULES=()\n'), /no HOOKS=/);
});

test('the recorded command line drops what bootloaders and stiefelsystem add', () => {
  assert.equal(
    cleanCmdline('BOOT_IMAGE=/vmlinuz-6.1 root=UUID=abc ro quiet stiefel.mac=52:54:00:00:00:01 nbdroot=x netroot=nbd:y initrd=\\initrd splash'),
    'root=UUID=abc ro quiet splash',
  );
  assert.equal(rootFromFstab('# x\nUUID=r1 / ext4 defaults 0 1\nUUID=b1 /boot ext4 defaults 0 2\n'), 'root=UUID=r1');
  assert.equal(rootFromFstab('UUID=b1 /boot ext4 defaults 0 2\n'), null);
  assert.equal(grubDefaultCmdline('GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'), 'quiet splash');
});

test('the boot-menu entry: a grub.d snippet or a BootLoaderSpec entry on the ESP; the unit where no package brought it', () => {
  const record = { family: 'initramfs-tools' as const, cmdline: 'root=UUID=1 ro quiet console=ttyS0,115200' };
  const file = (facts: Parameters<typeof desiredFiles>[1], path: string) => desiredFiles(record, facts).find((f) => f.path === path)?.content ?? null;
  const grub = file({ ...noNetworkManagers, bootMenu: { kind: 'grub', update: ['update-grub'] } }, '/etc/grub.d/42_stiefelsystem');
  assert.ok(grub);
  assert.match(grub, /^menuentry 'stiefelsystem: serve this disk' --class stiefelsystem/m);
  assert.match(grub, /^\tlinux \$path\/vmlinuz stiefel\.role=server console=ttyS0,115200$/m);
  assert.match(grub, /^\tinitrd \$path\/initrd\.img$/m);
  const bls = file({ ...noNetworkManagers, bootMenu: { kind: 'systemd-boot', esp: '/boot/efi' } }, '/boot/efi/loader/entries/stiefelsystem.conf');
  assert.equal(bls?.split('\n').filter((l) => !l.startsWith('#')).join('\n'), 'title      stiefelsystem: serve this disk\nsort-key   zz-stiefelsystem\nlinux      /stiefelsystem/vmlinuz\ninitrd     /stiefelsystem/initrd.img\noptions    stiefel.role=server console=ttyS0,115200\n');
  // With neither, no snippet; without the package, the unit goes to /etc.
  assert.equal(file(noNetworkManagers, '/etc/grub.d/42_stiefelsystem'), null);
  assert.equal(file({ ...noNetworkManagers, packagedUnit: false }, LOCAL_UNIT_PATH), readAsset('laptop/stiefel-autokexec.service'));
  assert.equal(file({ ...noNetworkManagers, packagedUnit: false }, localUnitPath(WATCH_UNIT)), readAsset('laptop/stiefel-laptop-watch.service'));
  assert.equal(file(noNetworkManagers, LOCAL_UNIT_PATH), null);
  assert.equal(file(noNetworkManagers, localUnitPath(WATCH_UNIT)), null);
  // The grub snippet is valid sh.
  const r = spawnSync('dash', ['-n'], { input: grub, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

function fakeRoot(family: 'initramfs-tools' | 'dracut'): string {
  const root = mkdtempSync(join(tmpdir(), 'stf6-root-'));
  // What 'stiefelctl init' wrote, and a kernel with its modules.
  mkdirSync(join(root, 'etc/stiefelsystem'), { recursive: true });
  writeFileSync(join(root, 'etc/stiefelsystem/config.yaml'), 'server:\n  disk: /dev/vda\n');
  writeFileSync(join(root, 'etc/stiefelsystem/secret'), Buffer.alloc(32, 7), { mode: 0o600 });
  mkdirSync(join(root, 'lib/modules/6.1.0-0-stf/'), { recursive: true }); // made-up release
  writeFileSync(join(root, 'lib/modules/6.1.0-0-stf/modules.dep'), ''); // made-up release
  mkdirSync(join(root, 'usr/sbin'), { recursive: true });
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  mkdirSync(join(root, 'etc/kernel'), { recursive: true });
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, family === 'dracut' ? 'usr/bin/dracut' : 'usr/sbin/update-initramfs'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(join(root, 'etc/kernel/cmdline'), 'root=UUID=feed ro console=ttyS0\n');
  writeFileSync(join(root, 'boot/vmlinuz-6.1.0-0-stf'), 'kernel'); // made-up release
  return root;
}

/** Records the commands; `build-image` in a chroot writes the files it would. */
function scriptedRunner(failOn?: string): CommandRunner & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async run(file, args) {
      const line = [file, ...args].join(' ');
      calls.push(line);
      if (failOn && line.includes(failOn)) return { code: 1, stdout: '', stderr: 'E: mkinitramfs failure cpio 141' };
      if (file === 'chroot' && args.includes('build-image')) {
        const out = join(args[0]!, args[args.indexOf('--out') + 1]!);
        mkdirSync(out, { recursive: true });
        writeFileSync(join(out, 'vmlinuz'), 'kernel');
        writeFileSync(join(out, 'initrd.img'), readFileSync(join(args[0]!, args[args.indexOf('--config') + 1]!)));
      }
      return { code: 0, stdout: '', stderr: '' };
    },
  };
}

const deps = (runner: CommandRunner) => ({ runner, log: silentLogger, stiefelctl: ['stiefelctl'] });

test('apply: writes files with their modes, regenerates in a chroot and unmounts after', async () => {
  const root = fakeRoot('initramfs-tools');
  try {
    const plan = await planServerOs({ root, uninstall: false });
    assert.equal(plan.record?.family, 'initramfs-tools');
    assert.equal(plan.record?.cmdline, 'root=UUID=feed ro console=ttyS0');
    assert.deepEqual(plan.actions, ['build stiefelOS from /boot/vmlinuz-6.1.0-0-stf into /boot/stiefelsystem', 'enable stiefel-autokexec.service', 'enable stiefel-laptop-watch.service', 'enable stiefel-nbd-reconnect.service']); // made-up release
    const runner = scriptedRunner();
    const result = await applyServerOs(plan, deps(runner));
    assert.deepEqual(result.regenerated, ['update-initramfs', '-u', '-k', 'all']);
    const mounts = [`mount -t proc proc ${root}/proc`, `mount -t sysfs sysfs ${root}/sys`, `mount --bind /dev ${root}/dev`];
    const umounts = [`umount ${root}/dev`, `umount ${root}/sys`, `umount ${root}/proc`];
    assert.deepEqual(runner.calls.map((c) => c.replace(/stiefel-image-config-[0-9a-f]+/, 'CONFIG')), [
      ...mounts,
      `chroot ${root} update-initramfs -u -k all`,
      ...umounts,
      ...mounts,
      `chroot ${root} stiefelctl build-image --kernel /boot/vmlinuz-6.1.0-0-stf --out /boot/stiefelsystem --config /var/tmp/CONFIG.yaml --secret /etc/stiefelsystem/secret --pxe`, // made-up release
      ...umounts,
    ]);
    // stiefelOS got the laptop's config (the temporary copy is gone), and autokexec is enabled as systemctl would.
    assert.equal(readFileSync(join(root, 'boot/stiefelsystem/initrd.img'), 'utf8'), 'server:\n  disk: /dev/vda\n');
    assert.deepEqual(readdirSync(join(root, 'var/tmp')), []);
    assert.equal(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/stiefel-autokexec.service')), LOCAL_UNIT_PATH);
    assert.equal(readFileSync(join(root, LOCAL_UNIT_PATH), 'utf8'), readAsset('laptop/stiefel-autokexec.service'));
    assert.equal(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants', WATCH_UNIT)), localUnitPath(WATCH_UNIT));
    assert.equal(statSync(join(root, KERNEL_POSTINST_PATH)).mode & 0o777, 0o755);
    assert.equal(readFileSync(join(root, ATTACH_PATH), 'utf8'), readAsset('server-os/stiefel-attach.sh'));
    assert.equal(statSync(join(root, ATTACH_PATH)).mode & 0o777, 0o755);
    assert.deepEqual(JSON.parse(readFileSync(join(root, BOOT_RECORD_PATH), 'utf8')).family, 'initramfs-tools');
    // Twice: nothing to change, nothing run.
    const again = await planServerOs({ root, uninstall: false });
    assert.deepEqual([again.changes, again.actions], [[], []]);
    // Uninstalling takes it all away again: files, stiefelOS, the service.
    const un = await planServerOs({ root, uninstall: true });
    assert.deepEqual(un.actions, ['remove stiefelOS (/boot/stiefelsystem)', 'disable stiefel-autokexec.service', 'disable stiefel-laptop-watch.service', 'disable stiefel-nbd-reconnect.service']);
    await applyServerOs(un, deps(scriptedRunner()));
    assert.ok(!existsSync(join(root, 'boot/stiefelsystem')));
    assert.ok(!existsSync(join(root, 'etc/systemd/system/multi-user.target.wants/stiefel-autokexec.service')));
    assert.ok(!existsSync(join(root, 'etc/systemd/system/multi-user.target.wants', WATCH_UNIT)));
    for (const p of [ATTACH_PATH, KERNEL_POSTINST_PATH, LOCAL_UNIT_PATH, localUnitPath(WATCH_UNIT), BOOT_RECORD_PATH]) assert.ok(!existsSync(join(root, p)), p);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('apply: a failed regeneration puts every file back as it was', async () => {
  const root = fakeRoot('dracut');
  try {
    writeFileSync(join(root, 'boot/stiefelsystem-os.json'), 'old record\n');
    const plan = await planServerOs({ root, uninstall: false });
    const runner = scriptedRunner('dracut --force');
    await assert.rejects(applyServerOs(plan, deps(runner)), (err: unknown) => err instanceof StiefelError && /cpio 141/.test(err.message));
    assert.equal(readFileSync(join(root, 'boot/stiefelsystem-os.json'), 'utf8'), 'old record\n');
    assert.throws(() => statSync(join(root, ATTACH_PATH)), /ENOENT/);
    assert.throws(() => statSync(join(root, 'etc/dracut.conf.d/stiefelsystem.conf')), /ENOENT/);
    assert.ok(runner.calls.some((c) => c.startsWith('umount')), 'unmounted after the failure');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('CLI: --dry-run shows the diffs and changes nothing; mistakes are one line', async () => {
  const root = fakeRoot('initramfs-tools');
  // What the dry run writes would be newer than this mark, made after the fake root's own files
  // (not one of them: on a loaded machine those get distinct time stamps too).
  const mark = join(tmpdir(), `stf-dry-run-mark-${process.pid}`);
  writeFileSync(mark, '');
  try {
    const dry = await runCli(['setup-server-os', '--root', root, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^\+\+\+ b\/etc\/initramfs-tools\/hooks\/stiefelsystem$/m);
    assert.match(dry.stdout, /^\+\+\+ b\/boot\/stiefelsystem-os\.json$/m);
    assert.match(dry.stderr, /dry run: \d+ file\(s\) to write .*, then: update-initramfs -u -k all; build stiefelOS from \/boot\/vmlinuz-\S+ into \/boot\/stiefelsystem; enable stiefel-autokexec\.service; enable stiefel-laptop-watch\.service; enable stiefel-nbd-reconnect\.service; nothing was changed/);
    assert.equal(execFileSync('find', [root, '-newer', mark, '-type', 'f'], { encoding: 'utf8' }), '');

    const noTty = await runCli(['setup-server-os', '--root', root], { detached: true });
    assert.equal(noTty.code, 2);
    assert.equal(noTty.stderr.trim().split('\n').at(-1), "stiefelctl setup-server-os: no terminal to ask on: pass --yes to apply, or --dry-run to only look (see 'stiefelctl setup-server-os --help')");

    const badFamily = await runCli(['setup-server-os', '--family', 'genkernel', '--dry-run']);
    assert.equal(badFamily.code, 2);
    assert.match(badFamily.stderr, /--family must be one of initramfs-tools, dracut, mkinitcpio, not 'genkernel'/);

    const missing = await runCli(['setup-server-os', '--root', join(root, 'nope'), '--dry-run']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim().split('\n').length, 1);
    assert.match(missing.stderr, /is not a directory; --root takes the laptop OS's mounted root directory/);

    const noConfig = fakeRoot('initramfs-tools');
    rmSync(join(noConfig, 'etc/stiefelsystem'), { recursive: true });
    const unconfigured = await runCli(['setup-server-os', '--root', noConfig, '--dry-run']);
    rmSync(noConfig, { recursive: true });
    assert.equal(unconfigured.code, 1);
    assert.match(unconfigured.stderr.trim().split('\n').at(-1)!, /there is no \S+\/etc\/stiefelsystem\/config\.yaml: run 'stiefelctl init' first/);

    const empty = mkdtempSync(join(tmpdir(), 'stf6-empty-'));
    const none = await runCli(['setup-server-os', '--root', empty, '--dry-run']);
    rmSync(empty, { recursive: true });
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no initramfs generator found .* pass --family/);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(mark, { force: true });
  }
});

test('the attach script is valid POSIX sh and does nothing without stiefel.mac=', () => {
  const script = readAsset('server-os/stiefel-attach.sh');
  for (const shell of ['dash', 'busybox']) {
    requireTool(shell);
    const args = shell === 'busybox' ? ['sh', '-n'] : ['-n'];
    const r = spawnSync(shell, args, { input: script, encoding: 'utf8' });
    assert.equal(r.status, 0, `${shell}: ${r.stderr}`);
  }
  // This host's /proc/cmdline has no stiefel parameters: the script must
  // return at once, silently, without loading modules or touching interfaces.
  assert.doesNotMatch(readFileSync('/proc/cmdline', 'utf8'), /stiefel\.mac=/);
  const r = spawnSync('/bin/sh', ['-c', script], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
  assert.equal(r.status, 0);
  assert.equal(r.stdout + r.stderr, '');
});
