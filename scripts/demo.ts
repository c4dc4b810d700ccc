// npm run demo: stiefelsystem's main job, end to end, narrated for a person
// watching. Two virtual machines stand in for the laptop and the desktop; a
// virtual cable joins them. The desktop has no disk: it boots the Linux
// installed on the laptop's disk, which it reaches over the cable.
//
// Needs root (network namespace, loop mounts, QEMU taps). The first run
// builds and caches a small Debian "laptop" disk image with debootstrap.
import { E2E_CACHE_DIR, runEndToEnd } from '../test/helpers/e2e';

const tty = process.stdout.isTTY;
const bold = (s: string): string => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string): string => (tty ? `\x1b[2m${s}\x1b[0m` : s);
const started = Date.now();
const clock = (): string => `${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s`;

function say(text: string): void {
  process.stdout.write(`\n${bold(`==> ${text}`)}\n`);
}

// What each console line means, for the lines worth showing.
const NARRATION: Array<[RegExp, string]> = [
  [/^stiefelOS: .*role server/, 'The laptop has booted stiefelOS, the small stiefelsystem ramdisk, as the server.'],
  [/^WireGuard tunnel .* up/, 'It makes WireGuard keys for this boot only: the disk will be served through that tunnel alone.'],
  [/^boot payload: /, "It found what the laptop boots, on its own disk, the way the laptop's boot loader would, and closed the disk again."],
  [/^stiefelOS: .*role client/, 'The desktop has booted stiefelOS too (from a USB stick, in real life), as the client.'],
  [/^looking for the laptop/, 'It asks on every network port at once: an authenticated discovery datagram (HMAC, fresh nonce).'],
  [/^found the laptop/, 'The laptop answered, proving it holds the same secret.'],
  [/^payload verified/, "Kernel and initrd arrived over TLS-PSK and match the laptop's signed manifest, piece by piece."],
  [/^starting the laptop OS$/, "The desktop now replaces its own kernel with the laptop's (kexec); the WireGuard keys ride along in a cpio appended to the initrd."],
  [/stiefelsystem: looking for the NIC/, "The laptop OS's own initramfs is running on the desktop; stiefelsystem's hook finds the cable's network port."],
  [/stiefelsystem: WireGuard tunnel .* is up/, 'It brings the WireGuard tunnel to the laptop up.'],
  [/stiefelsystem: \/dev\/nbd0 attached/, "The laptop's whole disk is now /dev/nbd0 on the desktop; the initramfs mounts its root from it as usual."],
  [/the desktop at .* connected to the disk/, 'The laptop sees the desktop attach its disk through the tunnel.'],
  [/STIEFEL-E2E-ROOT /, 'The laptop OS runs on the desktop with its root file system on the network disk.'],
  [/STIEFEL-E2E-MARKER /, 'It wrote a file with this run\u2019s random token to its disk and synced; now it powers the desktop off.'],
];

const told = new Set<(typeof NARRATION)[number]>();

function onConsole(machine: 'laptop' | 'desktop', line: string): void {
  // eslint-disable-next-line no-control-regex
  const text = line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/^\[ *\d+\.\d+\] /, '').trim();
  const hit = NARRATION.find(([re]) => re.test(text));
  // Each step once: the attach script's lines also reach the console through the kernel log.
  if (!hit || told.has(hit)) return;
  told.add(hit);
  process.stdout.write(`${dim(`${clock()}  ${machine.padEnd(7)} | ${text.slice(0, 150)}`)}\n`);
  process.stdout.write(`${clock()}  ${hit[1]}\n`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root (network namespace, loop mounts, QEMU taps): run it with sudo\n');
    process.exit(1);
  }
  say('stiefelsystem: boot the Linux installed on a laptop on a desktop, over one network cable');
  process.stdout.write(
    [
      'Two QEMU virtual machines (software emulation: everything is about 10x slower than real hardware):',
      '  laptop   runs stiefelOS as the server; its disk holds a small Debian with stiefelsystem set up',
      '  desktop  runs stiefelOS as the client; it has no disk at all',
      'joined by one virtual Ethernet cable. Watch the desktop boot the laptop\u2019s Debian.',
      '',
    ].join('\n'),
  );
  say('Preparing: stiefelOS image, the laptop disk image (cached after the first run)');
  const result = await runEndToEnd({
    family: 'initramfs-tools',
    cacheDir: E2E_CACHE_DIR,
    wireguard: true,
    timeScale: 3,
    log: (line) => process.stdout.write(`${clock()}  ${line}\n`),
    onConsole,
  });
  say('Done');
  process.stdout.write(
    [
      `Time from switching the desktop on to the laptop OS writing to its disk: ${result.totalSeconds.toFixed(1)} s (emulated), by stage:`,
      ...result.stages.map((s) => `  ${s.name.padEnd(22)} ${s.seconds.toFixed(1).padStart(6)} s`),
      `The laptop's disk image now holds the token ${result.token} that the desktop wrote.`,
      '',
      'On real machines: stiefelctl init, setup-server-os and build-image on the laptop, then',
      'stiefelctl server there and stiefelctl client on the desktop. See README.md.',
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
