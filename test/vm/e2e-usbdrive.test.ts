// The whole chain with the desktop started the way a user starts it: from
// the boot stick create-usbdrive writes, plugged in as a USB stick, through
// the PC firmware: UEFI (OVMF) for the initramfs-tools laptop, BIOS
// (SeaBIOS) for the dracut one. Otherwise the same scenario as
// e2e-boot.test.ts (test/helpers/e2e.ts), ending with the desktop's token on
// the laptop's disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runEndToEnd } from '../helpers/e2e';
import { TEST_CACHE_DIR } from '../helpers/test-cache';
import { requireRoot, requireTool } from '../helpers/tools';

/** A cache of its own: another worktree's VM tests prune the shared one's images built from other stiefelctl bundles. */
const CACHE = join(TEST_CACHE_DIR, 'usbdrive');

for (const [family, desktopBoot] of [['initramfs-tools', 'uefi-stick'], ['dracut', 'bios-stick']] as const) {
  test(`the desktop boots from the stick (${desktopBoot === 'uefi-stick' ? 'UEFI' : 'BIOS'}) and then the laptop OS (${family}) from the laptop's disk`, { timeout: 40 * 60_000 }, async () => {
    requireRoot();
    for (const tool of ['qemu-system-x86_64', 'debootstrap', 'mke2fs', 'sgdisk', 'mkfs.vfat', 'syslinux']) requireTool(tool);
    const started = Date.now();
    const result = await runEndToEnd({
      family,
      cacheDir: CACHE,
      desktopBoot,
      log: (line) => console.log(`[e2e ${family} ${desktopBoot} ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`),
      timeScale: 3,
      consoleDir: `/tmp/stf13-e2e-consoles/${family}`,
    });
    assert.deepEqual(
      result.stages.map((s) => s.name),
      ['stiefelOS boot', 'discovery', 'payload', 'kexec', 'laptop OS initramfs', 'laptop OS boot'],
    );
    console.log(`[e2e ${family} ${desktopBoot}] ${result.stages.map((s) => `${s.name} ${s.seconds.toFixed(1)} s`).join(', ')}; total ${result.totalSeconds.toFixed(1)} s`);
  });
}
