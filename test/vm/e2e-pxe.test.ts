// The desktop with no disk and no stick: its firmware (SeaBIOS, then OVMF)
// PXE-boots QEMU's iPXE ROM, which gets its address and boot file from the
// laptop's dnsmasq and loads the laptop's secret-free stiefelOS over HTTP;
// that stiefelOS pairs with the code shown on the laptop's console (typed on
// the desktop's keyboard, a wrong one first), then boots the laptop's
// installed Linux over NBD through WireGuard as in the other end-to-end
// scenarios. Under SeaBIOS (the dracut laptop) the whole chain runs; under
// OVMF it ends once the paired desktop has verified the laptop's payload:
// from there on the chain is the one the cable scenario and the journey
// run (initramfs-tools), and a boot of the laptop OS costs the suite two
// minutes more. The dracut laptop's cable carries jumbo frames (link.mtu 9000):
// the laptop sets it from the start, the PXE ROM and the desktop's stiefelOS
// stay at 1500 (TCP keeps to the smaller MSS), and the laptop OS sets 9000 on
// its link and 8920 on its tunnel; that laptop also asks for two disk
// connections (server.nbd.connections: 2, nbd-client -C 2), and the desktop
// has two CPUs, so that its block layer sends requests on both. See
// test/helpers/e2e.ts for the stages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { E2E_CACHE_DIR, runEndToEnd } from '../helpers/e2e';
import { requireRoot, requireTool } from '../helpers/tools';

for (const [family, desktopBoot] of [['dracut', 'bios-pxe'], ['initramfs-tools', 'uefi-pxe']] as const) {
  const firmware = desktopBoot === 'uefi-pxe' ? 'UEFI' : 'BIOS';
  const whole = desktopBoot === 'bios-pxe';
  const then = whole ? `boots the laptop OS (${family})` : `downloads and verifies the laptop OS's kernel and initramfs (${family})`;
  test(`the desktop PXE-boots from the laptop (${firmware}), pairs with the code on the laptop's console, then ${then}`, { timeout: 40 * 60_000 }, async () => {
    requireRoot();
    for (const tool of ['qemu-system-x86_64', 'debootstrap', 'mke2fs', 'sgdisk', 'dnsmasq']) requireTool(tool);
    const started = Date.now();
    const result = await runEndToEnd({
      family,
      cacheDir: E2E_CACHE_DIR,
      wireguard: true,
      desktopBoot,
      ...(family === 'dracut' ? { mtu: 9000, nbdConnections: 2, desktopCpus: 2 } : {}),
      untilPayload: !whole,
      log: (line) => console.log(`[e2e pxe ${family} ${firmware} ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`),
      timeScale: 3,
      consoleDir: `/tmp/stf6-e2e-consoles/pxe-${family}`,
    });
    assert.deepEqual(
      result.stages.map((s) => s.name),
      ['PXE', 'stiefelOS boot', 'pairing', 'payload', ...(whole ? ['kexec', 'laptop OS initramfs', 'laptop OS boot'] : [])],
    );
    if (whole) {
      assert.match(result.diskPeer, /^fd[0-9a-f]{2}:[0-9a-f:]+$/);
      assert.equal(result.desktopMtu, '9000 8920', "the MTUs of the desktop's link and tunnel");
      assert.equal(result.diskConnections, 2, 'the desktop opened two connections to the disk (nbd-client -C 2), both admitted');
      // With several connections the kernel fails a request that waits past its timeout: the attach script sets a day.
      assert.equal(result.diskRequestTimeoutS, 86400, "the desktop kernel's request timeout (/sys/block/nbd0/queue/io_timeout)");
    }
    console.log(`[e2e pxe ${family} ${firmware}] ${result.stages.map((s) => `${s.name} ${s.seconds.toFixed(1)} s`).join(', ')}; total ${result.totalSeconds.toFixed(1)} s`);
  });
}
