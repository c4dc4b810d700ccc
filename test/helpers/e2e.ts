// The end-to-end scenario: a desktop with no disk boots the laptop's
// installed Linux over the network, in two QEMU VMs (software emulation) on
// one point-to-point Ethernet link.
//
//   server VM  stiefelOS, stiefel.role=server, the laptop disk image as
//              /dev/vda: finds the boot entry on it, serves discovery, the
//              payload (TLS-PSK) and the disk (NBD through WireGuard)
//   client VM  stiefelOS, stiefel.role=client, no disk: discovers the
//              server, fetches and verifies the payload, kexecs it; the
//              laptop OS's own initramfs attaches the disk and boots from it,
//              and a test unit writes a marker with this run's token onto its
//              root file system, syncs and powers off
//
// Then the server VM is stopped and the token is looked for inside the
// laptop's disk image. Used by the test/vm/e2e-*.test.ts scenarios, `npm run demo` and
// `npm run bench:e2e`.
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { appendFile, copyFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { encodeNewc } from '../../src/cpio/newc';
import { initrdPadding } from '../../src/cpio/newc';
import { CLI } from './cli';
import { debianKernel } from './kernel';
import { buildLaptopImage, type LaptopFamily, type LaptopImage } from './laptop-image';
import { makeBootStick } from './boot-stick';
import { ovmfFirmware, startVm, type QemuVm, type VmOptions } from './qemu';
import { pruneCache, TEST_CACHE_DIR } from './test-cache';

const run = promisify(execFile);

export interface EndToEndOptions {
  family: LaptopFamily;
  /** Caches the laptop images and the stiefelOS image between runs. */
  cacheDir: string;
  /** Serve the disk through WireGuard (the default) or directly on the link. */
  wireguard?: boolean;
  /** Measure the network disk's throughput inside the booted laptop OS. */
  bench?: boolean;
  /** Progress lines for a person watching (and the test's log). */
  log?: (line: string) => void;
  /** Multiplies every timeout (a loaded machine is slower). */
  timeScale?: number;
  /** Where to save both serial consoles (server.log, client.log), also on success. */
  consoleDir?: string;
  /** Every console line as it comes, from the laptop (server VM) or the desktop (client VM). */
  onConsole?: (machine: 'laptop' | 'desktop', line: string) => void;
  /**
   * How the desktop starts stiefelOS: QEMU's -kernel/-initrd (the default),
   * or the boot stick create-usbdrive writes, as a USB stick booted by UEFI
   * firmware (OVMF) or by the BIOS (SeaBIOS), or by PXE from the laptop with
   * no disk and no stick (the firmware boots QEMU's iPXE ROM of its NIC);
   * then the desktop pairs: the code on the laptop's console is typed on the
   * desktop's keyboard, a wrong one first.
   */
  desktopBoot?: 'kernel' | 'uefi-stick' | 'bios-stick' | 'uefi-pxe' | 'bios-pxe';
  /**
   * Pull the cable while the laptop OS on the desktop writes: it writes
   * `records` fsynced records, one a second; after record `atRecord` both
   * ends of the cable lose carrier (QMP set_link off on each VM's NIC) for
   * `offSeconds`, then get it back. With `reset`, the laptop OS then aborts
   * its end of the disk connection (ss -K) and writes three more records:
   * the reconnect path, which a pull takes only by chance.
   */
  cable?: { records: number; atRecord: number; offSeconds: number; reset?: boolean };
  /**
   * Cut the desktop's power while the laptop OS writes fsynced records, one
   * a second: after record `atRecord` the desktop VM is killed (SIGKILL).
   * With `cable`, the cut comes after the cable's records (which then go on
   * until the cut); alone, the records start at once. The laptop's console
   * must say it no longer hears the desktop; its disk must be consistent
   * once the journal is replayed.
   */
  powerCut?: { atRecord: number };
  /** Stop once the desktop's stiefelOS client runs (a benchmark of the boot media). */
  untilClient?: boolean;
  /** Stop once the desktop verified the payload (the rest of the chain is another scenario's). */
  untilPayload?: boolean;
  /** The laptop's link.mtu (both ends; 1500 when omitted). */
  mtu?: number;
  /** The laptop's server.nbd.connections: the TCP connections the desktop's kernel opens to the disk (1 when omitted). */
  nbdConnections?: number;
  /** The desktop VM's CPUs (1 when omitted): its block layer gives each CPU's requests to one connection. */
  desktopCpus?: number;
}

export interface PowerCutResult {
  /** Records the laptop OS reported as fsynced before the cut. */
  reported: number;
  /** Records found on the laptop's disk afterwards. */
  onDisk: number[];
  /** From the cut to the laptop's console saying the desktop is silent. */
  noticedAfterSeconds: number;
  /** What e2fsck said: the replay, then a forced check that must find nothing. */
  fsck: string;
}

/** The disk connection reset by the laptop OS (ss -K), and what followed. */
export interface ResetResult {
  /** Connections ss -K aborted. */
  killed: number;
  /** The three records after it: written (true) or failed. */
  records: boolean[];
  /** Sockets the NBD driver took from stiefel-nbd-reconnect so far (the pull's included), and the kernel's disk errors. */
  reconnected: number;
  diskErrors: number;
  /** What stiefel-nbd-reconnect said after the reset. */
  reconnectSaid: string[];
  /** What the laptop's console said of the desktop's disk connection after it. */
  laptopSaid: string[];
}

export interface CableResult {
  offSeconds: number;
  /** From carrier back to the next record written. */
  resumedAfterSeconds: number;
  /** Records the laptop OS reported as fsynced, and the records found on the laptop's disk afterwards. */
  reported: number;
  onDisk: number[];
  rootOptions: string;
  diskErrors: number;
  /** What the laptop OS's NBD driver logged of its connection: requests timed out (connection given up), sockets replaced. */
  nbdEvents: { timedOut: number; reconnected: number };
  /** What stiefel-nbd-reconnect said on the desktop's console: armed, connection lost, reconnected. */
  reconnectSaid: string[];
  /** What the laptop's console said meanwhile: the silence, the return, the status lines. */
  laptopSaid: string[];
  /** What the desktop's console said (the laptop OS's laptop watch): the laptop's silence and its return. */
  desktopSaid: string[];
  /** `systemctl is-active NetworkManager` and `nmcli -t -f DEVICE,STATE device` in the laptop OS, after the records. */
  networkManager: string;
  reset?: ResetResult;
}

export interface Stage {
  name: string;
  /** Seconds this stage took. */
  seconds: number;
}

export interface EndToEndResult {
  token: string;
  /** From the client VM's start, in order. */
  stages: Stage[];
  totalSeconds: number;
  /** dd's summary lines from inside the laptop OS (with `bench`); readPair: two readers at once, "BYTES bytes in MS ms". */
  bench?: { read: string; write: string; readPair: string };
  /** The MTUs of the desktop's link to the laptop and of its tunnel, as the laptop OS saw them ("9000 8920"). */
  desktopMtu: string;
  /** With several disk connections: how long the desktop's kernel lets a request wait (the attach script's line), in seconds. */
  diskRequestTimeoutS: number | undefined;
  /** The address the disk was served to, as the server saw it. */
  diskPeer: string;
  /** The disk connections the laptop admitted (each from diskPeer). */
  diskConnections: number;
  cable?: CableResult;
  powerCut?: PowerCutResult;
}

export const E2E_CACHE_DIR = TEST_CACHE_DIR;
const SERVER_MAC = '52:54:00:5e:00:01';
const CLIENT_MAC = '52:54:00:de:00:02';

function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

/** One secret for the cached images: both VMs and the laptop's own OS hold it. */
export function e2eSecret(cacheDir: string): string {
  mkdirSync(cacheDir, { recursive: true });
  const secret = join(cacheDir, 'e2e-secret');
  if (!existsSync(secret)) writeFileSync(secret, randomBytes(32), { mode: 0o600 });
  return secret;
}

/**
 * stiefelOS (kernel + initrd) with a test secret, cached by its inputs. With
 * `pxe`, built by `build-image --pxe`: the initrd also carries the
 * secret-free copy the server role serves to desktops that PXE-boot.
 */
export async function stiefelOsImage(cacheDir: string, log: (l: string) => void, options: { pxe?: boolean } = {}): Promise<{ vmlinuz: string; initrd: string }> {
  const kernel = debianKernel();
  mkdirSync(cacheDir, { recursive: true });
  const secret = e2eSecret(cacheDir);
  const config = join(cacheDir, 'e2e-config.yaml');
  writeFileSync(config, 'secret: secret\nserver:\n  disk: /dev/vda\n');
  const st = statSync(kernel.path);
  const key = sha256(readFileSync(CLI), kernel.path, String(st.size), String(st.mtimeMs), readFileSync(config), readFileSync(secret), process.execPath);
  // Two caches, neither prefix a prefix of the other: pruning one keeps the other.
  const prefix = options.pxe ? 'stiefelpxe-' : 'stiefelos-';
  const dir = join(cacheDir, `${prefix}${key.slice(0, 16)}`);
  if (existsSync(join(dir, 'initrd.img'))) {
    log(`stiefelOS image from the cache (${dir})`);
  } else {
    log(`building stiefelOS: stiefelctl build-image --kernel ${kernel.path}${options.pxe ? ' --pxe' : ''}`);
    const tmp = `${dir}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    const args = [CLI, 'build-image', '--kernel', kernel.path, '--out', tmp, '--config', config, '--secret', secret, '--level', '3', ...(options.pxe ? ['--pxe'] : [])];
    await run(process.execPath, args, { maxBuffer: 16 * 1024 * 1024 });
    rmSync(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  }
  pruneCache(cacheDir, prefix, basename(dir));
  return { vmlinuz: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.img') };
}

/** A namespace with a bridge and two taps on it (stf6srv, stf6cli): the cable between the VMs. */
export async function makeCable(netns: string): Promise<void> {
  const ip = (...args: string[]) => run('ip', ['-n', netns, ...args]);
  await run('ip', ['netns', 'add', netns]);
  await ip('link', 'add', 'cable', 'type', 'bridge');
  // No IPv6 on the bridge itself: only the two VMs talk on this cable.
  await run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', 'net.ipv6.conf.cable.disable_ipv6=1']);
  await ip('link', 'set', 'cable', 'up');
  for (const tap of ['stf6srv', 'stf6cli']) {
    await ip('tuntap', 'add', 'dev', tap, 'mode', 'tap');
    await run('ip', ['netns', 'exec', netns, 'sysctl', '-q', '-w', `net.ipv6.conf.${tap}.disable_ipv6=1`]);
    // A cable that carries jumbo frames: the VMs' own MTUs decide (link.mtu).
    await ip('link', 'set', tap, 'mtu', '9000');
    await ip('link', 'set', tap, 'master', 'cable');
    await ip('link', 'set', tap, 'up');
  }
}

/** The server VM's own config, put over the image's in a cpio appended to its initrd. */
function serverConfigOverlay(token: string, options: { wireguard: boolean; bench: boolean; cableRecords?: number; services?: boolean; reset?: boolean; thenCut?: boolean; mtu?: number; nbdConnections?: number }): Buffer {
  const append = [
    `stiefel_e2e.token=${token}`,
    options.bench ? 'stiefel_e2e.bench=1' : '',
    options.cableRecords !== undefined ? `stiefel_e2e.cable=${options.cableRecords}` : '',
    options.services ? 'stiefel_e2e.services=1' : '',
    options.reset ? 'stiefel_e2e.reset=1' : '',
    options.thenCut ? 'stiefel_e2e.then=cut' : '',
  ]
    .filter(Boolean)
    .join(' ');
  const yaml = [
    'secret: secret',
    'server:',
    '  disk: /dev/vda',
    `  cmdline_append: "${append}"`,
    // The quick scenarios check the goodbye and stop there; the journey returns.
    '  when_done: stay',
    '  wireguard:',
    `    enabled: ${options.wireguard}`,
    ...(options.nbdConnections ? ['  nbd:', `    connections: ${options.nbdConnections}`] : []),
    ...(options.mtu ? ['link:', `  mtu: ${options.mtu}`] : []),
    '',
  ].join('\n');
  return encodeNewc([{ type: 'file', path: 'etc/stiefelsystem/config.yaml', data: Buffer.from(yaml), mode: 0o644 }]);
}

/**
 * The person at the desktop types the code the laptop's console shows, on
 * the keyboard (it lands on tty0, the desktop's /dev/console): a wrong one
 * first, which the laptop refuses, then the right one.
 */
async function pairByKeyboard(client: QemuVm, code: string, scale: number, log: (l: string) => void): Promise<void> {
  await client.waitFor(/asking for the pairing code the laptop's console shows/, 180_000 * scale);
  // Give the prompt a moment to switch the console to raw mode.
  await new Promise((r) => setTimeout(r, 2000));
  const wrong = code.replace(/\d/, (d) => String((Number(d) + 1) % 10));
  const from = client.console.length;
  await client.typeKeys(`${wrong}\r`);
  await client.waitFor(/wrong pairing code: 2 tries left/, 60_000 * scale, from);
  log(`a wrong code (${wrong}) was refused`);
  await new Promise((r) => setTimeout(r, 1000));
  await client.typeKeys(`${code}\r`);
  await client.waitFor(/paired with the laptop/, 60_000 * scale, from);
  log(`paired with the code ${code}`);
}

/** A copy of `initrd` at `out` with the `overlay` cpio appended (its files win over the image's). */
export async function initrdWithOverlay(initrd: string, overlay: Buffer, out: string): Promise<void> {
  await copyFile(initrd, out);
  await appendFile(out, Buffer.concat([initrdPadding(statSync(out).size), overlay]));
}

/** The record numbers the laptop OS reported as fsynced on `console` from `from` on. */
function reportedRecords(console: string, from: number): number[] {
  return [...console.slice(from).matchAll(/STIEFEL-E2E-WRITE (\d+)\r?\n/g)].map((m) => Number(m[1]));
}

/** The records file as it is on the laptop's disk image. */
async function recordsOnDisk(image: string, layout: LaptopImage['root']): Promise<number[]> {
  const text = (await readFromLaptopImage(image, layout, 'var/lib/stiefel-e2e/writes')) ?? '';
  return text.split('\n').filter(Boolean).map(Number);
}

/** Waits for record `n`, then `ms` more: a moment between two records. */
async function afterRecord(client: QemuVm, n: number, from: number, scale: number, ms: number): Promise<void> {
  await client.waitFor(new RegExp(`STIEFEL-E2E-WRITE ${n}\\r?\\n`), 120_000 * scale, from);
  await new Promise((r) => setTimeout(r, ms));
}

/**
 * The cable scenario's middle: once the laptop OS reported record
 * `atRecord`, both NICs lose carrier for `offSeconds`; then the records go
 * on, and the laptop OS reports its root's mount options and disk errors.
 */
async function pullTheCable(
  cable: NonNullable<EndToEndOptions['cable']>,
  server: QemuVm,
  client: QemuVm,
  scale: number,
  from: number,
  log: (l: string) => void,
): Promise<CableResult> {
  // Half-way to the next record: the laptop has sent every reply and had it
  // acknowledged, so its end of the connection is idle (no retransmission
  // pending), which is when a keepalive timer would give the desktop up.
  await afterRecord(client, cable.atRecord, from, scale, 500);
  // The laptop OS's watch of the laptop (stiefel-laptop-watch) is running: the records start only then.
  await client.waitFor(/stiefelsystem: watching the laptop at \S+ \(every 5 s\)/, 60_000 * scale, from);
  const serverFrom = server.console.length;
  for (const vm of [client, server]) await vm.qmp('set_link', { name: 'net0', up: false });
  const pulledAt = client.console.length;
  // The watch may have started after record atRecord: the pull came after the last record before it.
  const before = reportedRecords(client.console.slice(0, pulledAt), from).at(-1) ?? cable.atRecord;
  log(`cable pulled (both NICs without carrier) for ${cable.offSeconds} s`);
  await new Promise((r) => setTimeout(r, cable.offSeconds * 1000));
  for (const vm of [client, server]) await vm.qmp('set_link', { name: 'net0', up: true });
  const backAt = Date.now();
  const duringPull = reportedRecords(client.console, pulledAt);
  const last = duringPull.at(-1) ?? before;
  log(`cable pulled after record ${before}; back, records reported while it was out: ${duringPull.length === 0 ? 'none' : duringPull.join(', ')}`);
  // TCP retransmits with exponential back-off (at most 120 s apart): the
  // next record may take that long.
  const next = await client.waitFor(new RegExp(`STIEFEL-E2E-WRITE(-FAILED)? ${last + 1}\\r?\\n`), 300_000 * scale, pulledAt);
  const resumedAfterSeconds = (Date.now() - backAt) / 1000;
  log(`record ${last + 1} ${next[1] ? 'FAILED' : 'written'} ${resumedAfterSeconds.toFixed(1)} s after the cable came back`);
  const nm = await client.waitFor(/STIEFEL-E2E-NM ([^\r\n]*)\r?\n/, (cable.records + 120) * 1000 * scale, from);
  const options = await client.waitFor(/STIEFEL-E2E-ROOT-OPTIONS (\S+)\r?\n/, (cable.records + 120) * 1000 * scale, from);
  const errors = await client.waitFor(/STIEFEL-E2E-DISK-ERRORS (\d+)\r?\n/, 60_000 * scale, from);
  const events = await client.waitFor(/STIEFEL-E2E-NBD-EVENTS timed-out=(\d+) reconnected=(\d+)\r?\n/, 60_000 * scale, from);
  const reconnectSaid = client.console
    .slice(from)
    .split(/\r?\n/)
    .filter((l) => /stiefelsystem: nbd\d+ (reconnects by itself|lost its connection|reconnected)|stiefelsystem: nbd\d+: the laptop is still unreachable/.test(l));
  // The cable's records come before the reports (with a power cut to come, more follow them).
  const reported = reportedRecords(client.console.slice(0, client.console.indexOf('STIEFEL-E2E-NM ', from)), from).length;
  // The laptop noticed the silence (30 s) and the return (polled every 5 s).
  await server.waitFor(/the desktop at \S+ is heard again, after \d+ s/, 30_000 * scale, serverFrom);
  const laptopSaid = server.console
    .slice(serverFrom)
    .split(/\r?\n/)
    .filter((l) => /has not been heard from|is heard again|serving the disk to the desktop/.test(l));
  // The desktop's side: the laptop OS said the laptop was gone, and then back.
  await client.waitFor(/stiefelsystem: the laptop at \S+ answers again, after \d+ (s|min)/, 60_000 * scale, pulledAt);
  const desktopSaid = client.console
    .slice(pulledAt)
    .split(/\r?\n/)
    .filter((l) => /stiefelsystem: the laptop at \S+ (has not answered|answers again)/.test(l));
  return { offSeconds: cable.offSeconds, resumedAfterSeconds, reported, onDisk: [], rootOptions: options[1]!, diskErrors: Number(errors[1]), nbdEvents: { timedOut: Number(events[1]), reconnected: Number(events[2]) }, reconnectSaid, laptopSaid, desktopSaid, networkManager: nm[1]!.trim() };
}

/** The laptop OS resets its end of the disk connection (ss -K) after the cable's records, then writes three more. */
async function resetTheConnection(server: QemuVm, client: QemuVm, scale: number, from: number, serverFrom: number, log: (l: string) => void): Promise<ResetResult> {
  const resetting = await client.waitFor(/STIEFEL-E2E-RESETTING\r?\n/, 120_000 * scale, from);
  const resetAt = client.console.indexOf(resetting[0], from);
  const reset = await client.waitFor(/STIEFEL-E2E-RESET (\d+)\r?\n/, 60_000 * scale, resetAt);
  log(`the laptop OS reset its disk connection (ss -K aborted ${reset[1]})`);
  // Each record may wait out one request timeout (30 s) when a request was in flight on the aborted connection.
  const events = await client.waitFor(/STIEFEL-E2E-RESET-EVENTS reconnected=(\d+) disk-errors=(\d+)\r?\n/, 240_000 * scale, resetAt);
  const between = client.console.slice(resetAt, client.console.indexOf(events[0], resetAt));
  const records = [...between.matchAll(/STIEFEL-E2E-WRITE(-FAILED)? \d+\r?\n/g)].map((m) => m[1] === undefined);
  const reconnectSaid = between.split(/\r?\n/).filter((l) => /stiefelsystem: nbd\d+ (lost its connection|reconnected)|stiefelsystem: nbd\d+: the laptop is still unreachable/.test(l));
  // The laptop saw the reset at once (and may have lost a connection in the
  // pull too): each loss must be followed by the desktop's return, within
  // the 20 s the way back gives it before it offers R.
  const count = (re: RegExp): number => server.console.slice(serverFrom).match(re)?.length ?? 0;
  const lostLine = /the desktop at \S+ lost its disk connection without a goodbye/g;
  const backLine = /the desktop at \S+ is back on the disk after \d+ s/g;
  const deadline = Date.now() + 60_000 * scale;
  while ((count(lostLine) === 0 || count(backLine) < count(lostLine)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
  const laptopSaid = server.console
    .slice(serverFrom)
    .split(/\r?\n/)
    .filter((l) => /the desktop at \S+ (lost its disk connection|is back on the disk|left the disk|connected to the disk|disconnected from the disk)/.test(l));
  log(`after the reset: ${records.length} records (${records.filter((r) => !r).length} failed), ${events[1]} reconnects in all; laptop: ${laptopSaid.join(' | ')}`);
  return { killed: Number(reset[1]), records, reconnected: Number(events[1]), diskErrors: Number(events[2]), reconnectSaid, laptopSaid };
}

/**
 * The power cut: once the laptop OS reported record `atRecord`, the desktop
 * VM is killed; the laptop must say it no longer hears the desktop, and is
 * then stopped the way its user would (QEMU ends on SIGTERM with every
 * write in the image).
 */
async function cutThePower(
  cut: NonNullable<EndToEndOptions['powerCut']>,
  server: QemuVm,
  client: QemuVm,
  scale: number,
  from: number,
  log: (l: string) => void,
): Promise<PowerCutResult> {
  // Mid-write: half-way to the next record, whose write may be on its way.
  await afterRecord(client, cut.atRecord, from, scale, 700);
  const reported = reportedRecords(client.console, from).length;
  const serverFrom = server.console.length;
  const pid = client.pid();
  if (pid === undefined) throw new Error('the desktop VM is not running');
  process.kill(pid, 'SIGKILL');
  const cutAt = Date.now();
  log(`the desktop's power cut after record ${reported} (QEMU killed)`);
  await client.waitForExit(30_000);
  await server.waitFor(/the desktop at \S+ has not been heard from for \d+ s: the cable is out or the desktop is off/, 120_000 * scale, serverFrom);
  const noticedAfterSeconds = (Date.now() - cutAt) / 1000;
  log(`the laptop says it no longer hears the desktop, ${noticedAfterSeconds.toFixed(1)} s after the cut`);
  const spid = server.pid();
  if (spid !== undefined) process.kill(spid, 'SIGTERM');
  await server.waitForExit(60_000 * scale);
  return { reported, onDisk: [], noticedAfterSeconds, fsck: '' };
}

/**
 * e2fsck on the laptop image's root partition (a loop device at its
 * offset): first as a mount would (replaying the journal), then forced and
 * read-only, which must find nothing to mend. Returns what both said.
 */
async function checkLaptopRoot(image: string, layout: LaptopImage['root']): Promise<string> {
  const { stdout } = await run('losetup', ['-f', '--show', '-o', String(layout.offset), '--sizelimit', String(layout.size), image]);
  const dev = stdout.trim();
  try {
    const fsck = (args: string[]) =>
      run('e2fsck', [...args, dev]).then(
        (r) => ({ code: 0, out: r.stdout + r.stderr }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }),
      );
    // -p: what the boot-time check does (replays the journal; 0 or 1 when all is well).
    const replay = await fsck(['-p']);
    if (replay.code > 1) throw new Error(`e2fsck -p on the laptop's root after the power cut: exit ${replay.code}\n${replay.out}`);
    const check = await fsck(['-fn']);
    if (check.code !== 0) throw new Error(`e2fsck -fn on the laptop's root after the journal replay: exit ${check.code}\n${check.out}`);
    return `${replay.out.trim()} / ${check.out.trim().split('\n').at(-1)}`;
  } finally {
    await run('losetup', ['-d', dev]).catch(() => undefined);
  }
}

/** Runs fn with a partition of a disk image mounted read-only (a loop mount at its offset). */
export async function withImagePartition<T>(image: string, part: { offset: number; size: number }, fn: (dir: string) => T): Promise<T> {
  const mnt = mkdtempSync(join(tmpdir(), 'stf6-mnt-'));
  try {
    await run('mount', ['-o', `ro,loop,offset=${part.offset},sizelimit=${part.size}`, image, mnt]);
    try {
      return fn(mnt);
    } finally {
      await run('umount', [mnt]);
    }
  } finally {
    rmSync(mnt, { recursive: true, force: true });
  }
}

/** Reads a file from the ext4 root partition of the laptop image (mounted read-only by offset). */
export function readFromLaptopImage(image: string, layout: LaptopImage['root'], path: string): Promise<string | null> {
  return withImagePartition(image, layout, (mnt) => {
    try {
      return readFileSync(join(mnt, path), 'utf8');
    } catch {
      return null;
    }
  });
}

export async function runEndToEnd(options: EndToEndOptions): Promise<EndToEndResult> {
  const log = options.log ?? (() => undefined);
  const scale = options.timeScale ?? 1;
  const wireguard = options.wireguard ?? true;
  const work = mkdtempSync(join(tmpdir(), 'stf6-e2e-'));
  const vms: QemuVm[] = [];
  let netns: string | undefined;
  try {
    const t0 = Date.now();
    const desktopBoot = options.desktopBoot ?? 'kernel';
    const pxe = desktopBoot === 'uefi-pxe' || desktopBoot === 'bios-pxe';
    const os = await stiefelOsImage(options.cacheDir, log);
    const serverOs = pxe ? await stiefelOsImage(options.cacheDir, log, { pxe: true }) : os;
    const laptop = await buildLaptopImage({ family: options.family, cacheDir: options.cacheDir, stiefelctl: CLI, secret: e2eSecret(options.cacheDir), log });
    const disk = join(work, 'laptop.img');
    await run('cp', ['--sparse=always', laptop.path, disk]);
    const token = randomBytes(12).toString('hex');
    const serverInitrd = join(work, 'server-initrd.img');
    await initrdWithOverlay(serverOs.initrd, serverConfigOverlay(token, { wireguard, bench: options.bench ?? false, cableRecords: options.cable?.records ?? (options.powerCut ? 0 : undefined), services: options.cable !== undefined, reset: options.cable?.reset, thenCut: options.powerCut !== undefined, mtu: options.mtu, nbdConnections: options.nbdConnections }), serverInitrd);
    log(`prepared in ${((Date.now() - t0) / 1000).toFixed(1)} s; token ${token}`);

    // The cable: a bridge with one tap per VM, in a network namespace of
    // this run (taps pass whole TCP segments; QEMU's socket netdevs do not).
    netns = `stf6-e2e-${randomBytes(3).toString('hex')}`;
    await makeCable(netns);

    const server = startVm({
      name: `stf6-server-${options.family}`,
      kernel: serverOs.vmlinuz,
      initrd: serverInitrd,
      append: 'console=ttyS0 stiefel.role=server panic=-1',
      // The PXE image carries the served stiefelOS too (about 60 MB more in its tmpfs).
      memoryMiB: pxe ? 1536 : 1024,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6srv' }, mac: SERVER_MAC }],
      disks: [{ path: disk, format: 'raw' }],
      netns,
      qmp: options.cable !== undefined,
      onLine: options.onConsole && ((line) => options.onConsole!('laptop', line)),
    });
    vms.push(server);
    log('server VM (the laptop) started: stiefelOS, role server, the laptop disk as /dev/vda');
    // The laptop is ready first, as when it kexec'd into stiefelOS before the
    // desktop was switched on; the stages below are the desktop's.
    const serving = await server.waitFor(/^serving '[^\n]*; interfaces: ([^\r\n]*)\r?\n/m, 180_000 * scale);
    // The laptop discovers on its ports, not on its own WireGuard interface.
    if (serving[1]!.split(', ').includes('stiefelwg')) throw new Error(`the laptop uses its WireGuard interface as a discovery port: ${serving[1]}`);
    await server.waitFor(/^boot payload: [^\n]*\n/m, 180_000 * scale);
    log(`the laptop serves (${((Date.now() - t0) / 1000).toFixed(1)} s): ${/^boot payload: (.*?)\r?$/m.exec(server.console)?.[1] ?? ''}`);

    let boot: Partial<VmOptions> = { kernel: os.vmlinuz, initrd: os.initrd, append: 'console=ttyS0 stiefel.role=client panic=-1' };
    let code = '';
    if (pxe) {
      code = (await server.waitFor(/pairing code for a desktop that PXE-boots: (\d{3} \d{3})/, 120_000 * scale))[1]!;
      log(`the laptop shows the pairing code ${code}`);
      // As when the laptop has served for a while: its DHCP probe (about 6 s) is over before the desktop is switched on.
      const services = await server.waitFor(/PXE on eth0: ([^\r\n]*)/, 60_000 * scale);
      log(`the laptop's boot services: ${services[1]}`);
      boot = { uefi: desktopBoot === 'uefi-pxe' ? ovmfFirmware(work) : undefined };
    } else if (desktopBoot !== 'kernel') {
      const stick = await makeBootStick({ initrd: os.initrd, secret: join(options.cacheDir, 'e2e-secret'), dir: work, cmdlineAppend: 'panic=-1' });
      log(`boot stick written by create-usbdrive in ${stick.seconds.toFixed(1)} s`);
      boot = { usbStick: { path: stick.path, snapshot: true }, uefi: desktopBoot === 'uefi-stick' ? ovmfFirmware(work) : undefined };
    }
    const clientStart = Date.now();
    const client = startVm({
      name: `stf6-client-${options.family}`,
      ...boot,
      memoryMiB: 2048,
      cpus: options.desktopCpus,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' }, mac: CLIENT_MAC, ...(pxe ? { bootIndex: 1 } : {}) }],
      netns,
      qmp: options.cable !== undefined || pxe,
      onLine: options.onConsole && ((line) => options.onConsole!('desktop', line)),
    });
    vms.push(client);
    const firmware = desktopBoot.startsWith('uefi') ? 'UEFI' : 'BIOS';
    log(`client VM (the desktop) started: no disk, ${desktopBoot === 'kernel' ? 'stiefelOS by -kernel' : pxe ? `PXE (${firmware})` : `from the boot stick (${firmware})`}`);

    const stages: Stage[] = [];
    let last = clientStart;
    const stage = async (name: string, vm: QemuVm, pattern: RegExp, timeoutS: number, from = 0): Promise<RegExpMatchArray> => {
      const m = await vm.waitFor(pattern, timeoutS * 1000 * scale, from);
      const now = Date.now();
      stages.push({ name, seconds: (now - last) / 1000 });
      log(`${name}: ${((now - last) / 1000).toFixed(1)} s (${((now - clientStart) / 1000).toFixed(1)} s since the desktop started)`);
      last = now;
      return m;
    };

    if (pxe) {
      // Firmware, iPXE's DHCP (from the laptop's dnsmasq), the script, stiefelOS over HTTP.
      await stage('PXE', client, /Linux version \d/, 240);
      await stage('stiefelOS boot', client, /looking for the laptop at fe80::\S+ on .*\(it PXE-booted this desktop\)/, 180);
      if (options.untilClient) return { token, stages, totalSeconds: (Date.now() - clientStart) / 1000, diskPeer: '', diskConnections: 0, desktopMtu: '', diskRequestTimeoutS: undefined };
      await pairByKeyboard(client, code, scale, log);
      await stage('pairing', client, /found the laptop '.*' at (\S+) on (\S+) after/, 120);
    } else {
      await stage('stiefelOS boot', client, /looking for the laptop on/, 120);
      if (options.untilClient) return { token, stages, totalSeconds: (Date.now() - clientStart) / 1000, diskPeer: '', diskConnections: 0, desktopMtu: '', diskRequestTimeoutS: undefined };
      await stage('discovery', client, /found the laptop '.*' at (\S+) on (\S+) after/, 120);
    }
    await stage('payload', client, /payload verified: .*/, 180);
    if (options.untilPayload) return { token, stages, totalSeconds: (Date.now() - clientStart) / 1000, diskPeer: '', diskConnections: 0, desktopMtu: '', diskRequestTimeoutS: undefined };
    const kexecAt = client.console.length;
    await stage('kexec', client, /Linux version \d/, 120, kexecAt);
    await stage('laptop OS initramfs', client, /stiefelsystem: \/dev\/nbd0 attached/, 180, kexecAt);
    const marker = await stage('laptop OS boot', client, new RegExp(`STIEFEL-E2E-MARKER (${token})`), 300, kexecAt);
    const totalSeconds = (Date.now() - clientStart) / 1000;
    log(`marker ${marker[1]} reached ${totalSeconds.toFixed(1)} s after the desktop started`);

    const desktopMtu = /STIEFEL-E2E-MTU (.*)/.exec(client.console)?.[1]?.trim() ?? '';
    const waits = /attached: .*; requests wait up to (\d+) s/.exec(client.console)?.[1];
    const diskRequestTimeoutS = waits === undefined ? undefined : Number(waits);
    let bench: EndToEndResult['bench'];
    if (options.bench) {
      const read = /STIEFEL-E2E-BENCH read (.*)/.exec(client.console)?.[1] ?? '';
      const write = /STIEFEL-E2E-BENCH write (.*)/.exec(client.console)?.[1] ?? '';
      const readPair = /STIEFEL-E2E-BENCH read2 (.*)/.exec(client.console)?.[1] ?? '';
      bench = { read, write, readPair };
    }
    const serverBeforeCable = server.console.length;
    const cable = options.cable && (await pullTheCable(options.cable, server, client, scale, kexecAt, log));
    if (cable && options.cable?.reset) cable.reset = await resetTheConnection(server, client, scale, kexecAt, serverBeforeCable, log);
    const root = /STIEFEL-E2E-ROOT (\S+)/.exec(client.console)?.[1];
    if (root !== '/dev/nbd0p2') throw new Error(`the laptop OS's root was ${root ?? 'not reported'}, not /dev/nbd0p2`);
    const connected = [...server.console.matchAll(/the desktop at (\S+) connected to the disk/g)];
    const peer = connected[0]?.[1] ?? '';
    if (connected.some((m) => m[1] !== peer)) throw new Error(`the disk was served to more than one address: ${connected.map((m) => m[1]).join(', ')}`);
    const diskConnections = connected.length;
    if (options.powerCut) {
      const cut = await cutThePower(options.powerCut, server, client, scale, kexecAt, log);
      // First the check (a read-only mount cannot replay the journal), then the files.
      cut.fsck = await checkLaptopRoot(disk, laptop.root);
      log(`e2fsck: ${cut.fsck}`);
      const found = await readFromLaptopImage(disk, laptop.root, 'var/lib/stiefel-e2e/marker');
      if (found?.trim() !== token) throw new Error(`the laptop's disk lost the marker written before the cut (found ${JSON.stringify(found)})`);
      cut.onDisk = await recordsOnDisk(disk, laptop.root);
      if (cable) cable.onDisk = cut.onDisk;
      return { token, stages, totalSeconds, diskPeer: peer, diskConnections, cable, powerCut: cut, desktopMtu, diskRequestTimeoutS };
    }

    // The laptop OS powers the desktop off, saying goodbye as its last step;
    // the laptop stops serving and finds its disk left clean.
    await client.waitForExit(120_000 * scale);
    log('the desktop powered off');
    await server.waitFor(/the desktop at \S+ said goodbye \(it does poweroff\)/, 60_000 * scale);
    await server.waitFor(/the disk was left clean \(clean: partitions 1, 2\)/, 60_000 * scale);
    log('the laptop heard the goodbye and found its disk clean');
    // QEMU ends cleanly on SIGTERM, with every write of the guest in the image file.
    const pid = server.pid();
    if (pid !== undefined) process.kill(pid, 'SIGTERM');
    await server.waitForExit(60_000 * scale);
    log('the laptop (server VM) stopped');

    const found = await readFromLaptopImage(disk, laptop.root, 'var/lib/stiefel-e2e/marker');
    if (found?.trim() !== token) {
      throw new Error(`the laptop's disk image does not hold this run's token (found ${JSON.stringify(found)}, wanted ${token})`);
    }
    log(`the laptop's disk holds the token ${token}: what the desktop wrote landed on the laptop's disk`);
    if (cable) {
      cable.onDisk = await recordsOnDisk(disk, laptop.root);
    }
    return { token, stages, totalSeconds, bench, diskPeer: peer, diskConnections, cable, desktopMtu, diskRequestTimeoutS };
  } catch (err) {
    for (const vm of vms) {
      log(`--- last lines of the ${vm.name} console ---\n${vm.tail(40)}`);
    }
    throw err;
  } finally {
    if (options.consoleDir) {
      mkdirSync(options.consoleDir, { recursive: true });
      for (const [i, vm] of vms.entries()) writeFileSync(join(options.consoleDir, i === 0 ? 'server.log' : 'client.log'), vm.console);
    }
    for (const vm of vms) await vm.stop().catch(() => undefined);
    if (netns) await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

