// The whole chain in two VMs: the desktop starts the way a user starts it,
// from the boot stick create-usbdrive writes, plugged in as a USB stick,
// through the PC firmware (UEFI), and boots the laptop's installed Linux
// (initramfs-tools) over the network, its root file system on the laptop's
// disk through our NBD server and a WireGuard tunnel; what it writes lands on
// the laptop's disk, and its goodbye reaches the laptop. See
// test/helpers/e2e.ts for the stages; the first run builds and caches the
// laptop images (debootstrap, a few minutes each). The BIOS stick is booted
// to the stiefelOS client in usbdrive.test.ts, and the dracut laptop over
// the whole chain in e2e-pxe.test.ts (SeaBIOS): one full run per
// combination would repeat the same stages at three minutes each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { E2E_CACHE_DIR, runEndToEnd } from '../helpers/e2e';
import { requireRoot, requireTool } from '../helpers/tools';

for (const [family, desktopBoot] of [['initramfs-tools', 'uefi-stick']] as const) {
  const firmware = desktopBoot === 'uefi-stick' ? 'UEFI' : 'BIOS';
  test(`the desktop boots from the stick (${firmware}), then the laptop OS (${family}) from the laptop's disk over NBD through WireGuard`, { timeout: 40 * 60_000 }, async () => {
    requireRoot();
    for (const tool of ['qemu-system-x86_64', 'debootstrap', 'mke2fs', 'sgdisk', 'mkfs.vfat', 'syslinux']) requireTool(tool);
    const started = Date.now();
    const result = await runEndToEnd({
      family,
      cacheDir: E2E_CACHE_DIR,
      wireguard: true,
      desktopBoot,
      log: (line) => console.log(`[e2e ${family} ${firmware} ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`),
      timeScale: 3,
      consoleDir: `/tmp/stf6-e2e-consoles/${family}`,
    });
    assert.deepEqual(
      result.stages.map((s) => s.name),
      ['stiefelOS boot', 'discovery', 'payload', 'kexec', 'laptop OS initramfs', 'laptop OS boot'],
    );
    // The disk went to the desktop's end of the tunnel, not to its link-local address.
    assert.match(result.diskPeer, /^fd[0-9a-f]{2}:[0-9a-f:]+$/);
    assert.equal(result.desktopMtu, '1500 1420', "the MTUs of the desktop's link and tunnel: Ethernet's, and WireGuard's default");
    console.log(`[e2e ${family} ${firmware}] ${result.stages.map((s) => `${s.name} ${s.seconds.toFixed(1)} s`).join(', ')}; total ${result.totalSeconds.toFixed(1)} s`);
  });
}
