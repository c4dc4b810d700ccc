// stiefelOS booted in QEMU (software emulation): the image build-image writes
// from this host's Debian 6.1 kernel and programs, with its default settings.
//
// Budget (2 shared cores): build ~10 s, self-test boot ~30 s, rescue shell and
// hotplug ~30 s, two VMs on one link ~40 s: about 2 minutes, 3 under load.
// Time limits are 3x what a quiet machine needs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { dgramLink, withVms } from '../helpers/qemu';
import { requireTool } from '../helpers/tools';
import { debianKernel } from '../helpers/kernel';

const KERNEL = debianKernel().path;
/** QEMU start to STIEFEL-SELFTEST-OK: 23 s on a quiet machine (BENCHMARKS.md), 35-50 s under load. */
const SELFTEST_LIMIT_MS = 120_000;
/** QEMU start to the rescue shell: ~15 s. */
const RESCUE_LIMIT_MS = 60_000;

const work = mkdtempSync(join(tmpdir(), 'stf5-vm-'));
const out = join(work, 'image');

before(async () => {
  requireTool('qemu-system-x86_64');
  const r = await runCli(['build-image', '--kernel', KERNEL, '--out', out], { env: { ...process.env } });
  assert.equal(r.code, 0, `build-image failed:\n${r.stderr}`);
});
after(() => rmSync(work, { recursive: true, force: true }));

test('stiefel.role=selftest with one virtio NIC prints STIEFEL-SELFTEST-OK and powers off', { timeout: SELFTEST_LIMIT_MS + 60_000 }, async () => {
  await withVms(
    [
      {
        name: 'stf5-selftest',
        kernel: join(out, 'vmlinuz'),
        initrd: join(out, 'initrd.img'),
        append: 'console=ttyS0 stiefel.role=selftest panic=-1',
        memoryMiB: 512,
        nics: [{ netdev: { type: 'user' }, mac: '52:54:00:5f:00:01' }],
      },
    ],
    async ([vm]) => {
      const started = Date.now();
      const verdict = await vm!.waitFor(/STIEFEL-SELFTEST-(OK|FAILED: [^\r\n]*)/, SELFTEST_LIMIT_MS);
      const seconds = (Date.now() - started) / 1000;
      assert.equal(verdict[0], 'STIEFEL-SELFTEST-OK', `the self-test failed:\n${vm!.tail(30)}`);
      const text = vm!.console;
      for (const check of ['node', 'kexec', 'ip', 'wg', 'cryptsetup', 'lvm', 'blkid', 'mount', 'umount', 'modprobe', 'busybox', 'module nbd', 'module wireguard']) {
        assert.match(text, new RegExp(`^selftest: ok +${check}: `, 'm'), check);
      }
      // The NIC got the link-local address derived from its MAC (EUI-64).
      assert.match(text, /^selftest: ok +nic: eth0 fe80::5054:ff:fe5f:1\r?$/m);
      assert.match(text, /^stiefelOS: modules loaded: \d+ in \d rounds/m);
      const exit = await vm!.waitForExit(30_000);
      assert.equal(exit.code, 0, 'QEMU exits by itself when the guest powers off');
      console.log(`# QEMU start to STIEFEL-SELFTEST-OK: ${seconds.toFixed(1)} s`);
    },
  );
});

test('a failing role shows its error and a rescue shell on the console; disks mount, a hot-plugged NIC gets its driver', { timeout: RESCUE_LIMIT_MS + 120_000 }, async () => {
  // A small ext4 disk: virtio_blk comes from the modalias, ext4 from mount's request.
  const disk = join(work, 'disk.img');
  const content = join(work, 'disk-content');
  mkdirSync(content);
  writeFileSync(join(content, 'hello'), 'stf5-disk-ok\n');
  execFileSync(requireTool('mke2fs'), ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', content, disk, '16M']);
  await withVms(
    [
      {
        name: 'stf5-rescue',
        kernel: join(out, 'vmlinuz'),
        initrd: join(out, 'initrd.img'),
        append: 'console=ttyS0 stiefel.role=bogus panic=-1',
        memoryMiB: 512,
        qmp: true,
        disks: [{ path: disk, snapshot: true }],
        // An empty PCIe slot and a network backend for the NIC plugged in later.
        extraArgs: ['-device', 'pcie-root-port,id=hotslot,chassis=1,slot=1', '-netdev', 'user,id=hotnet'],
      },
    ],
    async ([vm]) => {
      await vm!.waitFor(/^stiefelOS: unknown stiefel\.role=bogus \(server, client or selftest\)/m, RESCUE_LIMIT_MS);
      await vm!.waitFor(/starting a rescue shell on the console/, 10_000);
      // The shell answers.
      const mark = vm!.console.length;
      vm!.send('echo "answer-$((6 * 7))"\n');
      await vm!.waitFor(/answer-42/, 20_000, mark);
      vm!.send('mount -t ext4 -o ro /dev/vda /mnt && cat /mnt/hello\n');
      await vm!.waitFor(/stf5-disk-ok/, 30_000, mark);
      // No NIC yet; plug one in, and the hotplug helper loads virtio_pci and virtio_net.
      vm!.send('ls /sys/class/net | tr "\\n" " "; echo ":before"\n');
      const before = await vm!.waitFor(/(\S[^\r\n]*):before/, 20_000, mark);
      assert.doesNotMatch(before[1]!, /eth0/);
      await vm!.qmp('device_add', { driver: 'virtio-net-pci', id: 'hotnic', bus: 'hotslot', netdev: 'hotnet' });
      const mark2 = vm!.console.length;
      vm!.send('i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; echo "hotplug-$(cat /sys/class/net/eth0/address 2>/dev/null || echo none)-$(grep -c ^virtio_net /proc/modules)"\n');
      const m = await vm!.waitFor(/hotplug-([0-9a-f:]+|none)-(\d)/, 90_000, mark2);
      assert.notEqual(m[1], 'none', 'eth0 appeared after the hotplug');
      assert.equal(m[2], '1', 'virtio_net was loaded');
    },
  );
});

test('two VMs on a point-to-point dgram link reach each other over IPv6 link-local', { timeout: RESCUE_LIMIT_MS * 2 + 60_000 }, async () => {
  const [endA, endB] = dgramLink(work, 'stf5-link');
  const vm = (name: string, netdev: typeof endA, mac: string) => ({
    name,
    kernel: join(out, 'vmlinuz'),
    initrd: join(out, 'initrd.img'),
    append: 'console=ttyS0 stiefel.role=none panic=-1',
    memoryMiB: 512,
    nics: [{ netdev, mac }],
  });
  await withVms([vm('stf5-link-a', endA, '52:54:00:5f:00:0a'), vm('stf5-link-b', endB, '52:54:00:5f:00:0b')], async ([a, b]) => {
    await Promise.all([a!, b!].map((v) => v.waitFor(/starting a rescue shell on the console/, RESCUE_LIMIT_MS * 2)));
    for (const v of [a!, b!]) v.send('ip link set eth0 up\n');
    const mark = a!.console.length;
    // B's address comes from its MAC (EUI-64); wait out duplicate address detection, then ping.
    a!.send('sleep 3; ping6 -c 2 -w 30 fe80::5054:ff:fe5f:b%eth0 >/dev/null && echo "link-ok" || echo "link-failed"\n');
    const m = await a!.waitFor(/link-(ok|failed)\r?\n/, 60_000, mark);
    assert.equal(m[1], 'ok', `VM A could not ping VM B:\n${b!.tail(20)}`);
  });
});
