// The whole journey in two VMs, as a person lives it:
//   1. the laptop boots its own Debian from its disk (UEFI firmware, systemd-boot);
//   2. a forged and a replayed discovery request change nothing;
//   3. the desktop is switched on and boots from its stick; its discovery makes
//      the laptop's autokexec reboot the laptop cleanly into stiefelOS;
//   4. the desktop boots the laptop OS from the laptop's disk, which leaves a
//      fresh token there and shuts down, saying goodbye as its last step;
//   5. the laptop finds its disk clean, returns to its own OS by itself, boots
//      from its own disk and prints the token it finds.
// Every stage is timed; both consoles are kept for a failure.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeBootStick } from './boot-stick';
import { REPO_ROOT } from './cli';
import { e2eSecret, makeCable, stiefelOsImage } from './e2e';
import { buildJourneyImage, type JourneyImage } from './journey-image';
import { ovmfFirmware, startVm, type QemuVm } from './qemu';

const run = promisify(execFile);
const LAPTOP_MAC = '52:54:00:5e:00:11';
const DESKTOP_MAC = '52:54:00:de:00:12';

export interface JourneyStage {
  name: string;
  seconds: number;
}

export interface JourneyResult {
  token: string;
  /** The laptop's own boot, from power-on to autokexec listening. */
  laptopBoot: JourneyStage[];
  /** From the desktop's power-on to the token written on the laptop's disk. */
  there: JourneyStage[];
  /** From the desktop's shutdown to the laptop's own OS up again with the token. */
  back: JourneyStage[];
  image: JourneyImage;
}

export interface JourneyOptions {
  cacheDir: string;
  /** The .deb to install on the laptop (npm run package). */
  deb: string;
  /** Multiplies every timeout (a loaded machine). */
  timeScale?: number;
  log?: (line: string) => void;
  consoleDir?: string;
}

/** Sends hand-made discovery datagrams onto the cable, from a probe port on its bridge. */
async function probe(netns: string, secret: string, mode: 'forged' | 'old'): Promise<void> {
  await run('ip', ['netns', 'exec', netns, process.execPath, '--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/discovery-send.ts'), secret, 'stf6prb', mode], { cwd: REPO_ROOT });
}

async function addProbePort(netns: string): Promise<void> {
  const ip = (...args: string[]) => run('ip', ['-n', netns, ...args]);
  await ip('link', 'add', 'stf6prb', 'type', 'veth', 'peer', 'name', 'stf6prbb');
  await ip('link', 'set', 'stf6prbb', 'master', 'cable');
  await ip('link', 'set', 'stf6prbb', 'up');
  await run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv6.conf.stf6prb.accept_dad=0']);
  await ip('link', 'set', 'stf6prb', 'up');
  // Its link-local address, to send from.
  for (let i = 0; i < 50; i++) {
    const { stdout } = await run('ip', ['-n', netns, '-6', 'addr', 'show', 'dev', 'stf6prb', 'scope', 'link']);
    if (/inet6 fe80::/.test(stdout) && !/tentative/.test(stdout)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the probe port got no link-local address');
}

export async function runJourney(options: JourneyOptions): Promise<JourneyResult> {
  const log = options.log ?? (() => undefined);
  const scale = options.timeScale ?? 1;
  const work = mkdtempSync(join(tmpdir(), 'stf14-journey-'));
  const vms: QemuVm[] = [];
  let netns: string | undefined;
  try {
    const secret = e2eSecret(options.cacheDir);
    const image = await buildJourneyImage({ cacheDir: options.cacheDir, deb: options.deb, secret, log });
    const disk = join(work, 'laptop.img');
    await run('cp', ['--sparse=always', image.path, disk]);
    const os = await stiefelOsImage(options.cacheDir, log);
    const stick = await makeBootStick({ initrd: os.initrd, secret, dir: work, cmdlineAppend: 'panic=-1' });
    netns = `stf14-j-${randomBytes(3).toString('hex')}`;
    await makeCable(netns);
    await addProbePort(netns);

    // 1. The laptop, from its own disk: firmware, systemd-boot, Debian.
    let t = Date.now();
    const laptop = startVm({
      name: 'stf14-laptop',
      uefi: ovmfFirmware(work),
      memoryMiB: 1536,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6srv' }, mac: LAPTOP_MAC, romfile: '' }],
      disks: [{ path: disk, format: 'raw', bootIndex: 0 }],
      netns,
    });
    vms.push(laptop);
    const mark = (list: JourneyStage[], name: string): void => {
      const now = Date.now();
      list.push({ name, seconds: (now - t) / 1000 });
      log(`${name}: ${((now - t) / 1000).toFixed(1)} s`);
      t = now;
    };
    const first: JourneyStage[] = [];
    await laptop.waitFor(/STIEFEL-E2E-LAPTOP-UP/, 300_000 * scale);
    mark(first, "laptop's own OS up (firmware, systemd-boot, Debian)");
    await laptop.waitFor(/waiting for desktops on UDP port 61570/, 120_000 * scale);
    mark(first, 'autokexec listening');

    // 2. A forged request and an old genuine one: refused, nothing happens.
    await probe(netns, secret, 'forged');
    await laptop.waitFor(/refused a request from fe80::\S+: bad-tag/, 30_000 * scale);
    await probe(netns, secret, 'old');
    await laptop.waitFor(/refused a request from fe80::\S+: stale/, 30_000 * scale);
    await new Promise((r) => setTimeout(r, 5000));
    if (/triggered:/.test(laptop.console)) throw new Error('a forged or replayed request triggered autokexec');
    log('a forged and a replayed request were refused; nothing was triggered');

    // 3. The desktop is switched on: from its stick, by UEFI.
    t = Date.now();
    const there: JourneyStage[] = [];
    const desktop = startVm({
      name: 'stf14-desktop',
      uefi: ovmfFirmware(work),
      usbStick: { path: stick.path, snapshot: true },
      memoryMiB: 2048,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' }, mac: DESKTOP_MAC, romfile: '' }],
      netns,
    });
    vms.push(desktop);
    await desktop.waitFor(/looking for the laptop on/, 240_000 * scale);
    mark(there, 'desktop: firmware, stick, stiefelOS up');
    await laptop.waitFor(/triggered: the desktop \S+ at fe80::\S+ asked for this laptop/, 60_000 * scale);
    mark(there, 'laptop: autokexec triggered');
    const down = laptop.console.length;
    await laptop.waitFor(/rebooting into stiefelOS \(systemctl kexec/, 60_000 * scale, down);
    mark(there, 'laptop: countdown');
    // What the laptop's own OS said on the way out: no warning (the replay floor kept on its disk).
    const warned = /stiefelctl\[\d+\]: warning: (?!refused a request)[^\r\n]*/.exec(laptop.console);
    if (warned) throw new Error(`autokexec warned on the laptop: ${warned[0]}`);
    await laptop.waitFor(/stiefelOS: .* role server/, 180_000 * scale, down);
    mark(there, 'laptop: clean shutdown and kexec into stiefelOS');
    await laptop.waitFor(/^serving '/m, 180_000 * scale, down);
    mark(there, 'laptop: serving');
    await desktop.waitFor(/payload verified/, 180_000 * scale);
    mark(there, 'desktop: discovery and payload');
    const kexecAt = desktop.console.length;
    await desktop.waitFor(/stiefelsystem: \/dev\/nbd0 attached/, 300_000 * scale, kexecAt);
    mark(there, "desktop: kexec and the laptop OS's initramfs");
    const marker = await desktop.waitFor(/STIEFEL-E2E-MARKER ([0-9a-f-]{36})/, 400_000 * scale, kexecAt);
    mark(there, 'desktop: the laptop OS boots and writes the token');
    const token = marker[1]!;

    // 4. The desktop shuts down, saying goodbye; 5. the laptop returns.
    const back: JourneyStage[] = [];
    await desktop.waitForExit(180_000 * scale);
    mark(back, 'desktop: shutdown with goodbye');
    await laptop.waitFor(/the desktop at \S+ said goodbye \(it does poweroff\)/, 60_000 * scale, down);
    await laptop.waitFor(/the disk was left clean/, 60_000 * scale, down);
    await laptop.waitFor(/starting the laptop's own OS/, 60_000 * scale, down);
    mark(back, 'laptop: disk checked, countdown');
    const seen = await laptop.waitFor(/STIEFEL-E2E-LAPTOP-SAW ([0-9a-f-]{36})/, 300_000 * scale, down);
    mark(back, "laptop: its own OS up again from its own disk");
    if (seen[1] !== token) throw new Error(`the laptop's own OS found ${seen[1]}, not the desktop's token ${token}`);
    log(`the laptop's own OS found the token ${token} that the laptop OS wrote while running on the desktop`);
    for (const vm of [laptop, desktop]) {
      const recovery = /EXT4-fs \([^)]*\): (recovery complete|orphan cleanup|INFO: recovery required)/.exec(vm.console);
      if (recovery) throw new Error(`${vm.name}: a mount of the laptop's root needed journal recovery: ${recovery[0]}`);
    }
    return { token, laptopBoot: first, there, back, image };
  } catch (err) {
    for (const vm of vms) log(`--- last lines of the ${vm.name} console ---\n${vm.tail(60)}`);
    throw err;
  } finally {
    if (options.consoleDir) {
      mkdirSync(options.consoleDir, { recursive: true });
      for (const vm of vms) writeFileSync(join(options.consoleDir, `${vm.name}.log`), vm.console);
    }
    for (const vm of vms) await vm.stop().catch(() => undefined);
    if (netns) await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

/** The laptop booted through its "stiefelsystem: serve this disk" boot-menu entry (the default changed in a copy). */
export async function bootMenuEntry(options: { image: JourneyImage; timeScale?: number; log?: (l: string) => void }): Promise<string> {
  const scale = options.timeScale ?? 1;
  const work = mkdtempSync(join(tmpdir(), 'stf14-entry-'));
  let vm: QemuVm | undefined;
  try {
    const disk = join(work, 'laptop.img');
    await run('cp', ['--sparse=always', options.image.path, disk]);
    const conf = join(work, 'loader.conf');
    writeFileSync(conf, 'timeout 2\ndefault stiefelsystem.conf\nconsole-mode keep\n');
    await run('mcopy', ['-o', '-i', `${disk}@@${options.image.esp.offset}`, conf, '::/loader/loader.conf']);
    vm = startVm({ name: 'stf14-entry', uefi: ovmfFirmware(work), memoryMiB: 1536, disks: [{ path: disk, format: 'raw', bootIndex: 0 }], nics: [{ netdev: { type: 'user' }, romfile: '' }] });
    const m = await vm.waitFor(/^(serving '[^\n]*)$/m, 400_000 * scale);
    options.log?.(`the boot-menu entry started stiefelOS as the server: ${m[1]!.trim()}`);
    return vm.console;
  } catch (err) {
    if (vm) options.log?.(`--- last lines of the boot-menu entry console ---\n${vm.tail(60)}`);
    throw err;
  } finally {
    await vm?.stop().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}
