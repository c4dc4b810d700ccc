// Live ISOs with no laptop: a desktop VM boots the stick (SeaBIOS) and a
// key brings the menu up. The ISO carries Debian's own kernel and the
// initramfs live-boot builds (test/helpers/live-iso.ts); its squashfs's
// /sbin/init prints its command line and mounts on the serial console.
// - From a USB disk: item f finds the ISO on a second disk (ext4), and
//   stiefelOS kexecs the ISO's kernel with findiso= naming the ISO's path
//   there; live-boot mounts the disk and loop-mounts the ISO from it.
// - By URL: stiefelOS reads the ISO's menu over HTTP ranges, sees a live
//   system, restarts itself from the stick with RAM set aside (memmap=),
//   downloads the ISO into it (/dev/pmem0), and kexecs the ISO's kernel
//   with the same memmap= and the pmem modules taken from the ISO's own
//   squashfs; live-boot finds the ISO on /dev/pmem0 as on a CD.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodeNewc } from '../../src/cpio/newc';
import { E2E_CACHE_DIR, e2eSecret, initrdWithOverlay, stiefelOsImage } from '../helpers/e2e';
import { ISO_LAB_ADDRESS, ISO_LAB_PORT, startIsoLab, type IsoLab } from '../helpers/iso-lab';
import { makeBootStick } from '../helpers/boot-stick';
import { LIVE_ROOT_END, LIVE_ROOT_MARK, makeLiveIso } from '../helpers/live-iso';
import { startVm, type QemuVm } from '../helpers/qemu';
import { requireRoot, requireTool } from '../helpers/tools';

const run = promisify(execFile);

/** The boot stick: stiefelOS with `config` as its config, the serial console last (where the test types). */
async function stickWith(work: string, os: { vmlinuz: string; initrd: string }, config: string): Promise<{ path: string }> {
  const image = join(work, 'image');
  mkdirSync(image);
  await run('cp', [os.vmlinuz, join(image, 'vmlinuz')]);
  await initrdWithOverlay(os.initrd, encodeNewc([{ type: 'file', path: 'etc/stiefelsystem/config.yaml', data: Buffer.from(config), mode: 0o644 }]), join(image, 'initrd.img'));
  return makeBootStick({ initrd: join(image, 'initrd.img'), secret: e2eSecret(E2E_CACHE_DIR), dir: work, cmdlineAppend: 'console=ttyS0,115200 panic=-1' });
}

/** The console kept for reading afterwards, the VM and the namespace gone. */
async function cleanUp(name: string, vm: QemuVm | undefined, lab: IsoLab | undefined, work: string): Promise<void> {
  if (vm) {
    const dir = `/tmp/stf6-e2e-consoles/${name}`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'desktop.log'), vm.console);
    await vm.stop();
  }
  await lab?.stop();
  rmSync(work, { recursive: true, force: true });
}

test("no laptop: the stick's menu boots a live ISO from a USB disk, and live-boot finds it there (findiso=)", { timeout: 30 * 60_000 }, async () => {
  requireRoot();
  for (const tool of ['qemu-system-x86_64', 'xorriso', 'mksquashfs', 'mkfs.ext4', 'debootstrap', 'syslinux']) requireTool(tool);
  const started = Date.now();
  const log = (line: string) => console.log(`[iso-live ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);
  const work = mkdtempSync(join(tmpdir(), 'stf-iso-live-'));
  const netns = `stf6-live-${randomBytes(3).toString('hex')}`;
  let vm: QemuVm | undefined;
  let lab: IsoLab | undefined;
  try {
    const os = await stiefelOsImage(E2E_CACHE_DIR, log);
    const live = await makeLiveIso(work, E2E_CACHE_DIR, log);
    log(`live ISO with Debian's kernel ${live.release} and live-boot's initramfs`);

    // The USB disk: ext4 on the whole disk, the ISO one directory down.
    const tree = join(work, 'usb-tree');
    mkdirSync(join(tree, 'isos'), { recursive: true });
    copyFileSync(live.iso, join(tree, 'isos', 'debian-live-test.iso'));
    const disk = join(work, 'usb-disk.img');
    await run('truncate', ['-s', '128M', disk]);
    await run('mkfs.ext4', ['-q', '-F', '-L', 'ISOS', '-d', tree, disk]);

    const config = ['secret: secret', 'client:', '  menu_after_s: 600', ''].join('\n');
    const stick = await stickWith(work, os, config);
    // A link with nobody on it (the laptop is not there).
    const empty = join(work, 'www');
    mkdirSync(empty);
    lab = await startIsoLab(netns, empty, join(work, 'leases'));

    vm = startVm({
      name: 'stf6-iso-live',
      usbStick: { path: stick.path, snapshot: true },
      disks: [{ path: disk, snapshot: true }],
      memoryMiB: 2048,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' }, mac: '52:54:00:de:00:0a' }],
      netns,
    });
    await vm.waitFor(/press a key for the menu/, 300_000);
    await vm.waitFor(/looking for the laptop on/, 60_000);
    vm.send('\r');
    await vm.waitFor(/Choice \(1, u, f, s\):/, 30_000);
    log('the menu is up: an ISO file from a USB disk');
    let from = vm.console.length;
    vm.send('f\r');
    await vm.waitFor(/Which \(1-1\)\?/, 60_000, from);
    assert.match(vm.console.slice(from), /ISO files found:\s+1 {2}\/run\/stiefel-media\/vda\/isos\/debian-live-test\.iso/);
    from = vm.console.length;
    const chosen = Date.now();
    vm.send('1\r');
    await vm.waitFor(/booting entry 1 of debian-live-test\.iso: Live system \(amd64\) \(Debian live\)/, 60_000, from);
    await vm.waitFor(/its initramfs \(live-boot\) finds the ISO again as \/isos\/debian-live-test\.iso on \/dev\/vda: findiso=\/isos\/debian-live-test\.iso/, 30_000, from);
    await vm.waitFor(/starting Live system \(amd64\)/, 120_000, from);
    const kexecAt = vm.console.length;
    log("kexec into the live ISO's kernel");
    await vm.waitFor(new RegExp(`${LIVE_ROOT_MARK}, kernel ${live.release.replace(/\./g, '\\.')}`), 600_000, kexecAt);
    await vm.waitFor(new RegExp(LIVE_ROOT_END), 30_000, kexecAt);
    const after = vm.console.slice(kexecAt);
    const cmdline = /STIEFEL-LIVE-CMDLINE: (.*)/.exec(after)?.[1] ?? '';
    assert.match(cmdline, /^boot=live components quiet splash console=tty0 console=ttyS0,115200 findiso=\/isos\/debian-live-test\.iso\s*$/, "the entry's words, stiefelOS's consoles (each once), the path for live-boot");
    // live-boot found the file on the disk and loop-mounted the ISO from there.
    assert.match(after, /STIEFEL-LIVE-MOUNT: \/dev\/vda \/run\/live\/findiso ext4 ro/);
    assert.match(after, /STIEFEL-LIVE-MOUNT: \/dev\/loop\d+ \/run\/live\/medium iso9660 ro/);
    assert.match(after, /STIEFEL-LIVE-MOUNT: \/dev\/loop\d+ \/run\/live\/rootfs\/filesystem\.squashfs squashfs ro/);
    log(`the live system's /sbin/init runs, ${((Date.now() - chosen) / 1000).toFixed(1)} s after the ISO was chosen`);
  } finally {
    await cleanUp('iso-live', vm, lab, work);
  }
});

test("no laptop: the stick's menu boots a live ISO by URL, kept in RAM across kexec (memmap=, /dev/pmem0)", { timeout: 30 * 60_000 }, async () => {
  requireRoot();
  for (const tool of ['qemu-system-x86_64', 'xorriso', 'mksquashfs', 'dnsmasq', 'debootstrap', 'syslinux']) requireTool(tool);
  const started = Date.now();
  const log = (line: string) => console.log(`[iso-live-pmem ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);
  const work = mkdtempSync(join(tmpdir(), 'stf-iso-pmem-'));
  const netns = `stf6-pmem-${randomBytes(3).toString('hex')}`;
  let vm: QemuVm | undefined;
  let lab: IsoLab | undefined;
  try {
    const os = await stiefelOsImage(E2E_CACHE_DIR, log);
    const live = await makeLiveIso(work, E2E_CACHE_DIR, log);
    const sha = createHash('sha256').update(readFileSync(live.iso)).digest('hex');
    const served = join(work, 'www');
    mkdirSync(served);
    copyFileSync(live.iso, join(served, 'debian-live-test.iso'));
    const url = `http://${ISO_LAB_ADDRESS}:${ISO_LAB_PORT}/debian-live-test.iso`;
    const config = ['secret: secret', 'client:', '  menu_after_s: 600', '  isos:', `    - "${url} sha256:${sha}"`, ''].join('\n');
    const stick = await stickWith(work, os, config);
    lab = await startIsoLab(netns, served, join(work, 'leases'));

    vm = startVm({
      name: 'stf6-iso-pmem',
      usbStick: { path: stick.path, snapshot: true },
      memoryMiB: 2048,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' }, mac: '52:54:00:de:00:0b' }],
      netns,
    });
    await vm.waitFor(/press a key for the menu/, 300_000);
    await vm.waitFor(/looking for the laptop on/, 60_000);
    vm.send('\r');
    await vm.waitFor(/Choice \(1, 2, u, f, s\):/, 30_000);
    let from = vm.console.length;
    const chosen = Date.now();
    vm.send('2\r');
    await vm.waitFor(/entry 1 is Debian live, which looks for its ISO again once it runs: the ISO stays in RAM across kexec/, 120_000, from);
    await vm.waitFor(/restarting stiefelOS with 128 MiB of RAM set aside for the ISO \(memmap=128M!\d+M\)/, 60_000, from);
    const restartAt = vm.console.length;
    log('stiefelOS restarts with RAM set aside');
    await vm.waitFor(/stiefelOS: .* role client/, 300_000, restartAt);
    from = vm.console.length;
    await vm.waitFor(/downloaded debian-live-test\.iso into the RAM set aside \(\/dev\/pmem0\): [\d.]+ MB in [\d.]+ s; SHA-256 [0-9a-f]{64} \(as given\)/, 300_000, from);
    await vm.waitFor(new RegExp(`the ISO's kernel ${live.release.replace(/\./g, '\\.')} gets .*nd_pmem\.ko.* from /live/filesystem\.squashfs, to see the ISO in RAM as /dev/pmem0`), 120_000, from);
    await vm.waitFor(/starting Live system \(amd64\)/, 120_000, from);
    const kexecAt = vm.console.length;
    log("kexec into the live ISO's kernel");
    await vm.waitFor(new RegExp(`${LIVE_ROOT_MARK}, kernel ${live.release.replace(/\./g, '\\.')}`), 600_000, kexecAt);
    await vm.waitFor(new RegExp(LIVE_ROOT_END), 30_000, kexecAt);
    const after = vm.console.slice(kexecAt);
    const cmdline = /STIEFEL-LIVE-CMDLINE: (.*)/.exec(after)?.[1] ?? '';
    assert.match(cmdline, /^boot=live components quiet splash console=tty0 console=ttyS0,115200 rdinit=\/stiefel-pmem\/init memmap=128M!\d+M\s*$/);
    assert.doesNotMatch(cmdline, /findiso=/);
    // live-boot found the ISO on the RAM kept across kexec, as on a CD.
    assert.match(after, /STIEFEL-LIVE-MOUNT: \/dev\/pmem0 \/run\/live\/medium iso9660 ro/);
    assert.match(after, /STIEFEL-LIVE-MOUNT: \/dev\/loop\d+ \/run\/live\/rootfs\/filesystem\.squashfs squashfs ro/);
    log(`the live system's /sbin/init runs, ${((Date.now() - chosen) / 1000).toFixed(1)} s after the ISO was chosen`);
  } finally {
    await cleanUp('iso-live-pmem', vm, lab, work);
  }
});
