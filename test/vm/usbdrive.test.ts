// The boot stick as PC firmware boots it: `stiefelctl create-usbdrive` writes
// an image, QEMU plugs it in as a USB stick (qemu-xhci + usb-storage) and
// boots it once with OVMF (UEFI: systemd-boot from EFI/BOOT/BOOTX64.EFI) and
// once with SeaBIOS (BIOS: gptmbr.bin, then syslinux), each time to
// stiefelOS's client role looking for the laptop, seen on the serial console.
// Then the menu's other entries: the rescue shell (syslinux) and the debug
// entry (systemd-boot), chosen by keys typed on the serial console.
//
// Budget on 2 shared cores: OVMF to the client ~45 s, SeaBIOS ~30 s, each of
// the other two about the same; limits are 3x that.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { stiefelOsImage } from '../helpers/e2e';
import { ovmfFirmware, withVms, type QemuVm, type VmOptions } from '../helpers/qemu';
import { TEST_CACHE_DIR } from '../helpers/test-cache';
import { requireRoot, requireTool } from '../helpers/tools';

const LIMIT_MS = 180_000;
const CACHE = TEST_CACHE_DIR;
const APPEND = 'stiefel_test.usb=1';

const work = mkdtempSync(join(tmpdir(), 'stf13-vm-'));
const stick = join(work, 'stick.img');

before(async () => {
  requireRoot();
  requireTool('qemu-system-x86_64');
  mkdirSync(CACHE, { recursive: true });
  const os = await stiefelOsImage(CACHE, (l) => console.log(`# ${l}`));
  const config = join(work, 'config.yaml');
  writeFileSync(config, `secret: ${join(CACHE, 'e2e-secret')}\nclient:\n  cmdline_append: "${APPEND}"\n`);
  const started = Date.now();
  const r = await runCli(['create-usbdrive', stick, '--config', config, '--image', join(os.initrd, '..'), '--yes']);
  assert.equal(r.code, 0, `create-usbdrive failed:\n${r.stderr}`);
  console.log(`# create-usbdrive (image file, --image): ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
after(() => rmSync(work, { recursive: true, force: true }));

function stickVm(name: string, uefi: boolean): VmOptions {
  return {
    name,
    uefi: uefi ? ovmfFirmware(work) : undefined,
    usbStick: { path: stick, snapshot: true },
    memoryMiB: 1024,
    nics: [{ netdev: { type: 'user' }, mac: '52:54:00:13:00:01' }],
  };
}

/** Waits for each pattern in turn, printing when each came (seconds since QEMU started). */
async function milestones(vm: QemuVm, steps: [string, RegExp][], started: number): Promise<Map<string, number>> {
  const at = new Map<string, number>();
  let from = 0;
  for (const [label, re] of steps) {
    const m = await vm.waitFor(re, LIMIT_MS, from);
    from = vm.console.indexOf(m[0], from) + m[0].length;
    at.set(label, (Date.now() - started) / 1000);
  }
  console.log(`# ${vm.name}: ${[...at].map(([l, s]) => `${l} ${s.toFixed(1)} s`).join(', ')}`);
  return at;
}

const CLIENT_CMDLINE = new RegExp(`Kernel command line: .*console=ttyS0,115200 console=tty0 stiefel\\.role=client ${APPEND.replace('.', '\\.')}`);

test('UEFI (OVMF): systemd-boot from the removable-media path starts stiefelOS, whose client looks for the laptop', { timeout: LIMIT_MS * 2 }, async () => {
  await withVms([stickVm('stf13-uefi', true)], async ([vm]) => {
    const started = Date.now();
    await milestones(
      vm!,
      [
        ['boot entry', /stiefelsystem: find the laptop and boot its OS/],
        ['kernel', /Linux version \d/],
        ['cmdline', CLIENT_CMDLINE],
        ['stiefelOS', /stiefelOS: stiefelOS \(stiefelctl [^)]*\), kernel \S+, role client/],
        ['client', /looking for the laptop on \S/],
      ],
      started,
    );
    // The menu lists all three entries.
    for (const title of ['the same, with debug messages', 'rescue shell']) assert.ok(vm!.console.includes(title), title);
    // The kernel ran as an EFI program (the stub), not through a BIOS loader.
    assert.match(vm!.console, /EFI stub|efi: EFI v/);
  });
});

test('BIOS (SeaBIOS): gptmbr.bin and syslinux start stiefelOS, whose client looks for the laptop; the menu shows on the serial port', { timeout: LIMIT_MS * 2 }, async () => {
  await withVms([stickVm('stf13-bios', false)], async ([vm]) => {
    const started = Date.now();
    await milestones(
      vm!,
      [
        ['syslinux', /SYSLINUX \d/],
        ['menu', /stiefelsystem: find the laptop and boot its OS/],
        ['kernel', /Linux version \d/],
        ['cmdline', CLIENT_CMDLINE],
        ['stiefelOS', /stiefelOS: stiefelOS \(stiefelctl [^)]*\), kernel \S+, role client/],
        ['client', /looking for the laptop on \S/],
      ],
      started,
    );
    assert.doesNotMatch(vm!.console, /efi: EFI v/);
  });
});

test('BIOS: the rescue entry, typed at the syslinux prompt, starts the rescue shell', { timeout: LIMIT_MS * 2 }, async () => {
  await withVms([stickVm('stf13-bios-rescue', false)], async ([vm]) => {
    await vm!.waitFor(/stiefelsystem: find the laptop and boot its OS/, LIMIT_MS);
    // Esc leaves the menu for the boot: prompt, where a label is typed.
    vm!.send('\x1b');
    await vm!.waitFor(/boot: /, 30_000);
    vm!.send('rescue\r');
    await vm!.waitFor(/Kernel command line: .*stiefel\.role=rescue/, LIMIT_MS);
    await vm!.waitFor(/stiefelOS: stiefel\.role=rescue: the rescue shell, as asked/, LIMIT_MS);
    await vm!.waitFor(/starting a rescue shell on the console/, 30_000);
    assert.doesNotMatch(vm!.console, /looking for the laptop/);
  });
});

test('UEFI: the debug entry, chosen in systemd-boot, shows the kernel and stiefelctl debug messages', { timeout: LIMIT_MS * 2 }, async () => {
  await withVms([stickVm('stf13-uefi-debug', true)], async ([vm]) => {
    await vm!.waitFor(/stiefelsystem: find the laptop and boot its OS/, LIMIT_MS);
    // Down, then Enter, as a terminal sends them.
    vm!.send('\x1b[B');
    await new Promise((r) => setTimeout(r, 500));
    vm!.send('\r');
    await vm!.waitFor(/Kernel command line: .*stiefel\.role=client debug STIEFEL_DEBUG=\*/, LIMIT_MS);
    await vm!.waitFor(/looking for the laptop on \S/, LIMIT_MS);
    // A debug line of stiefelctl's interface watcher, which only STIEFEL_DEBUG shows.
    await vm!.waitFor(/^\[netif\] interface \S+ is up/m, 60_000);
  });
});
