// Benchmarks for the boot stick: create-usbdrive's time and the stick's size,
// and what the firmware and boot loader add to starting stiefelOS's client
// (QEMU start to "looking for the laptop on"), UEFI and BIOS, against QEMU's
// direct -kernel/-initrd boot of the same image.
//
//   npm run build && flock /tmp/stiefel-vm.lock node --import tsx bench/usbdrive.ts [--runs 3 --boots 3]
//
// Prints a Markdown section for BENCHMARKS.md (progress on stderr). Root.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { debianKernel } from '../test/helpers/kernel';
import { ovmfFirmware, startVm, type VmOptions } from '../test/helpers/qemu';

const { path: KERNEL, release: RELEASE } = debianKernel();
const CLI = join(__dirname, '..', 'dist', 'stiefelctl.js');
const argv = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const RUNS = opt('runs', 3);
const BOOTS = opt('boots', 3);
const work = mkdtempSync(join(tmpdir(), 'stf13-bench-'));
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const f1 = (n: number): string => n.toFixed(1);

function cli(args: string[]): number {
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`stiefelctl ${args[0]} failed: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function bootTo(kind: 'kernel' | 'uefi' | 'bios', stick: string, image: string): Promise<Record<string, number>> {
  const base: VmOptions = { name: `stf13-bench-${kind}`, memoryMiB: 1024, nics: [{ netdev: { type: 'user' } }] };
  const o: VmOptions =
    kind === 'kernel'
      ? { ...base, kernel: join(image, 'vmlinuz'), initrd: join(image, 'initrd.img'), append: 'console=ttyS0,115200 console=tty0 stiefel.role=client' }
      : { ...base, usbStick: { path: stick, snapshot: true }, uefi: kind === 'uefi' ? ovmfFirmware(work) : undefined };
  const vm = startVm(o);
  const t0 = Date.now();
  const at: Record<string, number> = {};
  try {
    const steps: [string, RegExp][] = [
      ...(kind === 'kernel' ? [] : ([['menu', /stiefelsystem: find the laptop and boot its OS/]] as [string, RegExp][])),
      ['kernel', /Linux version \d/],
      ['init', /stiefelOS: stiefelOS \(stiefelctl/],
      ['client', /looking for the laptop on \S/],
    ];
    for (const [name, re] of steps) {
      await vm.waitFor(re, 300_000);
      at[name] = (Date.now() - t0) / 1000;
    }
  } finally {
    await vm.stop();
  }
  return at;
}

async function main(): Promise<void> {
  const config = join(work, 'config.yaml');
  cli(['init', '--config', config]);
  const image = join(work, 'image');
  // The image as create-usbdrive builds it, for --image and the direct boots.
  cli(['build-image', '--kernel', KERNEL, '--out', image, '--config', config, '--secret', join(work, 'secret')]);
  const withBuild: number[] = [];
  const withImage: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    rmSync(join(work, 'a.img'), { force: true });
    withBuild.push(cli(['create-usbdrive', join(work, 'a.img'), '--config', config, '--kernel', KERNEL, '--yes']));
    rmSync(join(work, 'b.img'), { force: true });
    withImage.push(cli(['create-usbdrive', join(work, 'b.img'), '--config', config, '--image', image, '--yes']));
    log(`run ${i + 1}: with build ${f1(withBuild.at(-1)!)} s, --image ${f1(withImage.at(-1)!)} s`);
  }
  const stick = join(work, 'b.img');
  const st = statSync(stick);
  const kernelBytes = statSync(join(image, 'vmlinuz')).size;
  const initrdBytes = statSync(join(image, 'initrd.img')).size;

  const boots: Record<string, Record<string, number>[]> = { kernel: [], uefi: [], bios: [] };
  for (let i = 0; i < BOOTS; i++) {
    for (const kind of ['kernel', 'bios', 'uefi'] as const) {
      const at = await bootTo(kind, stick, image);
      boots[kind]!.push(at);
      log(`boot ${i + 1} ${kind}: ${Object.entries(at).map(([k, v]) => `${k} ${f1(v)} s`).join(', ')}`);
    }
  }
  const med = (kind: string, step: string): string => {
    const xs = boots[kind]!.map((b) => b[step]).filter((x): x is number => x !== undefined);
    return xs.length ? f1(median(xs)) : '';
  };
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const out = [
    '## The boot stick (create-usbdrive)',
    '',
    `\`npm run build && flock /tmp/stiefel-vm.lock node --import tsx bench/usbdrive.ts --runs ${RUNS} --boots ${BOOTS}\` (bench/usbdrive.ts), kernel ${RELEASE}, load average at the end ${load}; medians.`,
    '',
    '| create-usbdrive, image file | median | min | max |',
    '| --- | --- | --- | --- |',
    `| building stiefelOS too (build-image inside) | ${f1(median(withBuild))} s | ${f1(Math.min(...withBuild))} s | ${f1(Math.max(...withBuild))} s |`,
    `| with \`--image\` (ESP, tables, write, read back) | ${f1(median(withImage))} s | ${f1(Math.min(...withImage))} s | ${f1(Math.max(...withImage))} s |`,
    '',
    `Stick: ${st.size} bytes (${st.size / 1048576} MiB) as an image file, ${(st.blocks * 512 / 1e6).toFixed(1)} MB allocated (sparse); the ESP holds the kernel (${(kernelBytes / 1e6).toFixed(1)} MB), the initrd (${(initrdBytes / 1e6).toFixed(1)} MB), systemd-boot, syslinux and the menus.`,
    '',
    '| QEMU start to ... (s) | boot menu | kernel (`Linux version`) | stiefelOS /init | client looking for the laptop |',
    '| --- | --- | --- | --- | --- |',
    `| direct \`-kernel\`/\`-initrd\` | - | ${med('kernel', 'kernel')} | ${med('kernel', 'init')} | ${med('kernel', 'client')} |`,
    `| USB stick, SeaBIOS (gptmbr, syslinux) | ${med('bios', 'menu')} | ${med('bios', 'kernel')} | ${med('bios', 'init')} | ${med('bios', 'client')} |`,
    `| USB stick, OVMF (systemd-boot) | ${med('uefi', 'menu')} | ${med('uefi', 'kernel')} | ${med('uefi', 'init')} | ${med('uefi', 'client')} |`,
    '',
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}

main()
  .catch((err: unknown) => {
    log(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exitCode = 1;
  })
  .finally(() => rmSync(work, { recursive: true, force: true }));
