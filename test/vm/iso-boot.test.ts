// The stick without a laptop: a desktop VM boots the stick (SeaBIOS), no
// laptop answers; a key brings the menu up on its console, "keep looking"
// brings it back by itself after the configured 15 s; the first ISO in the
// config's list has a wrong SHA-256 and is refused after the download,
// before anything is booted, and the menu comes back; the second is the
// same ISO with the right one: stiefelOS got its address by DHCP (dnsmasq
// in the test's network namespace), downloads the ISO over HTTP from there,
// and kexecs the installer's kernel, and Debian's installer shows its first
// screen on the serial console. The ISO is assembled from Debian's own
// netboot installer (test/helpers/mini-iso.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodeNewc } from '../../src/cpio/newc';
import { E2E_CACHE_DIR, e2eSecret, initrdWithOverlay, stiefelOsImage } from '../helpers/e2e';
import { ISO_LAB_ADDRESS, ISO_LAB_PORT, startIsoLab, type IsoLab } from '../helpers/iso-lab';
import { makeBootStick } from '../helpers/boot-stick';
import { makeMiniIso } from '../helpers/mini-iso';
import { startVm, type QemuVm } from '../helpers/qemu';
import { requireRoot, requireTool } from '../helpers/tools';

const run = promisify(execFile);

test("no laptop: the stick's menu boots an ISO by URL (a wrong checksum refused first), and Debian's installer starts", { timeout: 30 * 60_000 }, async () => {
  requireRoot();
  for (const tool of ['qemu-system-x86_64', 'xorriso', 'dnsmasq', 'mkfs.vfat', 'syslinux']) requireTool(tool);
  const started = Date.now();
  const log = (line: string) => console.log(`[iso-boot ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);
  const work = mkdtempSync(join(tmpdir(), 'stf-iso-boot-'));
  const netns = `stf6-iso-${randomBytes(3).toString('hex')}`;
  let vm: QemuVm | undefined;
  let lab: IsoLab | undefined;
  try {
    const os = await stiefelOsImage(E2E_CACHE_DIR, log);
    const iso = makeMiniIso(work);
    const sha = createHash('sha256').update(readFileSync(iso)).digest('hex');
    const wrong = createHash('sha256').update('not the iso').digest('hex');
    log(`mini.iso: ${(readFileSync(iso).length / 1e6).toFixed(1)} MB, SHA-256 ${sha}`);

    // The desktop's stiefelOS with a config listing the ISO twice, the first with a wrong checksum.
    const url = `http://${ISO_LAB_ADDRESS}:${ISO_LAB_PORT}/mini.iso`;
    const config = ['secret: secret', 'client:', '  menu_after_s: 15', '  isos:', `    - "${url} sha256:${wrong}"`, `    - "${url} sha256:${sha}"`, ''].join('\n');
    const image = join(work, 'image');
    mkdirSync(image);
    await run('cp', [os.vmlinuz, join(image, 'vmlinuz')]);
    await initrdWithOverlay(os.initrd, encodeNewc([{ type: 'file', path: 'etc/stiefelsystem/config.yaml', data: Buffer.from(config), mode: 0o644 }]), join(image, 'initrd.img'));
    // The serial port last: the console that takes input, where the test types.
    const stick = await makeBootStick({ initrd: join(image, 'initrd.img'), secret: e2eSecret(E2E_CACHE_DIR), dir: work, cmdlineAppend: 'console=ttyS0,115200 panic=-1' });
    log(`boot stick written in ${stick.seconds.toFixed(1)} s`);

    // The network: DHCP and the HTTP server on the cable's bridge in a namespace; no laptop anywhere.
    const served = join(work, 'www');
    mkdirSync(served);
    await run('cp', [iso, join(served, 'mini.iso')]);
    lab = await startIsoLab(netns, served, join(work, 'leases'));

    vm = startVm({
      name: 'stf6-iso-desktop',
      usbStick: { path: stick.path, snapshot: true },
      memoryMiB: 2048,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' }, mac: '52:54:00:de:00:09' }],
      netns,
    });
    await vm.waitFor(/press a key for the menu/, 300_000);
    await vm.waitFor(/looking for the laptop on/, 60_000);
    log('stiefelOS client runs; no laptop on the link; a key for the menu');
    vm.send('\r');
    await vm.waitFor(/The menu, as asked \(a key was pressed\)\. What now\?/, 30_000);
    await vm.waitFor(/Choice \(1, 2, 3, u, f, s\):/, 30_000);
    let from = vm.console.length;
    vm.send('1\r');
    await vm.waitFor(/looking for the laptop again/, 30_000, from);
    log('kept looking; the menu comes back by itself after 15 s');
    await vm.waitFor(/No laptop answered within 15 s\. What now\?/, 120_000, from);
    assert.match(vm.console, /\s2 {2}boot http:\/\/10\.99\.0\.1:8080\/mini\.iso/);
    await vm.waitFor(/Choice \(1, 2, 3, u, f, s\):/, 30_000);
    log('the menu is up: choosing the ISO with the wrong checksum');
    from = vm.console.length;
    vm.send('2\r');
    await vm.waitFor(/DHCP on eth0: 10\.99\.0\.\d+\/24/, 120_000, from);
    await vm.waitFor(new RegExp(`has SHA-256 ${sha}, not the ${wrong} you gave: nothing is booted`), 300_000, from);
    await vm.waitFor(/That did not boot \(the reason is just above\)\. What now\?/, 30_000, from);
    await vm.waitFor(/Choice \(1, 2, 3, u, f, s\):/, 30_000, from);
    assert.doesNotMatch(vm.console.slice(from), /loading its kernel \(kexec\)|starting Install/, 'nothing was loaded or kexec\'d');
    log('refused before anything booted; the menu is back: choosing the right one');
    from = vm.console.length;
    const chosen = Date.now();
    vm.send('3\r');
    await vm.waitFor(/downloaded mini\.iso: [\d.]+ MB in [\d.]+ s/, 300_000, from);
    await vm.waitFor(/booting entry 1 of mini\.iso: Install \(Debian installer\)/, 60_000, from);
    await vm.waitFor(/starting Install/, 120_000, from);
    const kexecAt = vm.console.length;
    log("kexec into the installer's kernel (its command line says quiet: no kernel messages)");
    // debian-installer's first question, drawn by its newt frontend on the serial console.
    await vm.waitFor(/Select a language/, 600_000, kexecAt);
    // Its language list (newt draws it with escape sequences between the words).
    await vm.waitFor(/English/, 60_000, kexecAt);
    log(`Debian's installer shows its first screen, ${((Date.now() - chosen) / 1000).toFixed(1)} s after the ISO was chosen (download ${/downloaded mini\.iso: ([\d.]+ MB in [\d.]+ s)/.exec(vm.console)?.[1]})`);
  } finally {
    if (vm) {
      const dir = '/tmp/stf6-e2e-consoles/iso-boot';
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'desktop.log'), vm.console);
      await vm.stop();
    }
    await lab?.stop();
    rmSync(work, { recursive: true, force: true });
  }
});
