// Benchmarks for `stiefelctl build-image` and booting stiefelOS in QEMU.
//
//   npm run build && npm run bench:image [-- --runs 5 --boots 3]
//   npm run build && npm run bench:image -- --sizes   (compressors only)
//
// Prints a Markdown section for BENCHMARKS.md. Measures, with medians:
//   - build time, cold (the inputs evicted from the page cache with
//     `dd iflag=nocache`, a fresh output directory) and warm (run again);
//     the peer is Debian's mkinitramfs building its own initrd for the same
//     kernel in the same run (different contents: a reference, not a race);
//   - initrd size per compression (zstd levels, gzip, none, and unstripped node);
//   - QEMU start to STIEFEL-SELFTEST-OK, with the guest's own timeline;
//   - coldplug module loading with kmod's modprobe (what /init uses) against
//     busybox's modprobe, in otherwise identical images.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeNewc, encodeNewc, type CpioEntry } from '../src/cpio/newc';
import type { BuildSummary } from '../src/image/build';
import { startVm } from '../test/helpers/qemu';
import { debianKernel } from '../test/helpers/kernel';

const { path: KERNEL, release: RELEASE } = debianKernel();
const CLI = join(__dirname, '..', 'dist', 'stiefelctl.js');

const argv = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const RUNS = opt('runs', 5);
const BOOTS = opt('boots', 3);

const work = mkdtempSync(join(tmpdir(), 'stf5-bench-'));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const MB = (n: number): string => (n / 1e6).toFixed(1);
const log = (s: string): void => void process.stderr.write(`${s}\n`);

function build(out: string, extra: string[] = []): { seconds: number; summary: BuildSummary } {
  rmSync(out, { recursive: true, force: true });
  const t = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [CLI, 'build-image', '--kernel', KERNEL, '--out', out, '--json', ...extra], {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`build-image failed: ${r.stderr}`);
  return { seconds, summary: JSON.parse(r.stdout) as BuildSummary };
}

function evict(files: string[]): void {
  // posix_fadvise(DONTNEED) through dd: drops clean pages of files nobody maps
  // (the running node and libc stay resident: other processes map them).
  spawnSync('sh', ['-c', 'for f; do dd if="$f" iflag=nocache count=0 status=none; done', 'sh', ...files]);
}

function inputFiles(summary: BuildSummary): string[] {
  const modules = execFileSync('find', [`/lib/modules/${RELEASE}`, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n');
  return [KERNEL, process.execPath, ...summary.programs.map((p) => p.path), ...summary.libraries, ...modules];
}

interface BootTimes {
  wall: number;
  initStart: number;
  modulesLoaded: number;
  okUptime: number;
  initrdFreed: number;
}

async function boot(kernel: string, initrd: string, name: string): Promise<BootTimes> {
  const started = Date.now();
  const vm = startVm({
    name,
    kernel,
    initrd,
    append: 'console=ttyS0 stiefel.role=selftest panic=-1',
    memoryMiB: 512,
    nics: [{ netdev: { type: 'user' } }],
  });
  try {
    const m = await vm.waitFor(/STIEFEL-SELFTEST-(OK|FAILED[^\r\n]*)/, 180_000);
    const wall = (Date.now() - started) / 1000;
    if (m[1] !== 'OK') throw new Error(`self-test failed:\n${vm.tail(30)}`);
    const num = (re: RegExp): number => Number(re.exec(vm.console)?.[1] ?? NaN);
    return {
      wall,
      initrdFreed: num(/\[\s*([0-9.]+)\] Freeing initrd memory/),
      initStart: num(/role selftest, up ([0-9.]+) s/),
      modulesLoaded: num(/modules loaded: \d+ in \d+ rounds, up ([0-9.]+) s/),
      okUptime: num(/selftest: uptime ([0-9.]+) s/),
    };
  } finally {
    await vm.stop();
  }
}

/** The same initrd with /init and the hotplug helper using busybox's modprobe instead of kmod's. */
function busyboxModprobeVariant(initrd: string, out: string): void {
  const raw = execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 });
  const entries: CpioEntry[] = decodeNewc(raw).entries.map((e) => {
    const type = e.mode & 0o170000;
    const mode = e.mode & 0o7777;
    if (type === 0o040000) return { type: 'dir', path: e.path, mode };
    if (type === 0o120000) return { type: 'symlink', path: e.path, target: e.data.toString() };
    if (type === 0o020000) return { type: 'char', path: e.path, major: e.rdevmajor, minor: e.rdevminor, mode };
    let data: Buffer = e.data;
    if (e.path === 'init') data = Buffer.from(e.data.toString().replace('xargs modprobe -a -b -q', 'xargs $BB modprobe -a -b -q'));
    if (e.path === 'usr/lib/stiefelsystem/hotplug') data = Buffer.from(e.data.toString().replace(' modprobe -b -q', ' /bin/busybox modprobe -b -q'));
    return { type: 'file', path: e.path, data, mode };
  });
  const cpio = encodeNewc(entries, { mtime: decodeNewc(raw).entries[0]!.mtime });
  writeFileSync(out, execFileSync('zstd', ['-q', '-c', '-T0', '-9'], { input: cpio, maxBuffer: 1 << 30 }));
}

/**
 * `--sizes`: the uncompressed cpio of the default image through other
 * compressors and options (what build-image does not offer), one run each,
 * with time on all cores (-T0 / -T2). Answers "how small can the same
 * contents get, and at what cost".
 */
function sizeStudy(): void {
  const out = join(work, 'none');
  const { summary } = build(out, ['--compress', 'none']);
  const cpio = join(out, 'initrd.img');
  const lines: string[] = [];
  lines.push(`The default contents as an uncompressed cpio (${MB(summary.initrd.bytes)} MB) through each compressor, one run each:`);
  lines.push('');
  lines.push('| compressor | size | time |', '| --- | --- | --- |');
  const variants: Array<[string, string, string[]]> = [
    ['zstd -9 (the default)', 'zstd', ['-q', '-c', '-T0', '-9']],
    ['zstd -9 --long=27', 'zstd', ['-q', '-c', '-T0', '-9', '--long=27']],
    ['zstd -10 --long=27', 'zstd', ['-q', '-c', '-T0', '-10', '--long=27']],
    ['zstd -12 --long=27', 'zstd', ['-q', '-c', '-T0', '-12', '--long=27']],
    ['zstd -19 --long=27', 'zstd', ['-q', '-c', '-T0', '-19', '--long=27']],
    ['xz -1, x86 BCJ, crc32', 'xz', ['-q', '-c', '-T2', '--check=crc32', '--x86', '--lzma2=preset=1']],
    ['xz -6, x86 BCJ, crc32', 'xz', ['-q', '-c', '-T2', '--check=crc32', '--x86', '--lzma2=preset=6']],
  ];
  for (const [name, tool, args] of variants) {
    const t = process.hrtime.bigint();
    const r = spawnSync('sh', ['-c', `"$0" "$@" < '${cpio}' | wc -c`, tool, ...args], { encoding: 'utf8' });
    const seconds = Number(process.hrtime.bigint() - t) / 1e9;
    if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr}`);
    lines.push(`| ${name} | ${MB(Number(r.stdout.trim()))} MB | ${seconds.toFixed(1)} s |`);
    log(`${name}: ${MB(Number(r.stdout.trim()))} MB in ${seconds.toFixed(1)} s`);
  }
  lines.push('');
  log(`load after: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  if (argv.includes('--sizes')) {
    log(`load before: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
    sizeStudy();
    return;
  }
  const lines: string[] = [];
  const out = join(work, 'img');
  log(`load before: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);

  // Build time, cold and warm, and the peer.
  const first = build(out);
  const files = inputFiles(first.summary);
  const cold: number[] = [];
  const warm: number[] = [];
  const peer: number[] = [];
  let peerSize = 0;
  for (let i = 0; i < RUNS; i++) {
    evict(files);
    cold.push(build(out).seconds);
    warm.push(build(out).seconds);
    const img = join(work, 'mkinitramfs.img');
    const t = process.hrtime.bigint();
    const r = spawnSync('mkinitramfs', ['-o', img, RELEASE], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mkinitramfs failed: ${r.stderr}`);
    peer.push(Number(process.hrtime.bigint() - t) / 1e9);
    peerSize = statSync(img).size;
    log(`run ${i + 1}: cold ${cold.at(-1)!.toFixed(1)} s, warm ${warm.at(-1)!.toFixed(1)} s, mkinitramfs ${peer.at(-1)!.toFixed(1)} s`);
  }
  const s = first.summary;
  lines.push('| build | median of ' + RUNS + ' | min | max |', '| --- | --- | --- | --- |');
  lines.push(`| build-image, cold (inputs evicted from the page cache) | ${median(cold).toFixed(1)} s | ${Math.min(...cold).toFixed(1)} s | ${Math.max(...cold).toFixed(1)} s |`);
  lines.push(`| build-image, warm | ${median(warm).toFixed(1)} s | ${Math.min(...warm).toFixed(1)} s | ${Math.max(...warm).toFixed(1)} s |`);
  lines.push(`| peer: Debian mkinitramfs, same kernel (its own contents, ${MB(peerSize)} MB) | ${median(peer).toFixed(1)} s | ${Math.min(...peer).toFixed(1)} s | ${Math.max(...peer).toFixed(1)} s |`);
  lines.push(`| ratio build-image warm / mkinitramfs | ${(median(warm) / median(peer)).toFixed(2)} | | |`);
  lines.push('');

  // Sizes per compression.
  lines.push(`Contents: ${s.modules.count} modules, ${s.programs.length} programs, ${s.libraries.length} libraries; unpacked ${MB(s.initrd.unpackedBytes)} MB:`);
  lines.push('');
  lines.push('| part | unpacked |', '| --- | --- |');
  for (const p of s.parts) lines.push(`| ${p.name} | ${MB(p.bytes)} MB |`);
  lines.push('');
  lines.push('| compression | initrd.img | build time (one run) |', '| --- | --- | --- |');
  const variants: Array<[string, string[]]> = [
    ['zstd -3', ['--compress', 'zstd', '--level', '3']],
    ['zstd -6', ['--compress', 'zstd', '--level', '6']],
    ['zstd -9 (default)', []],
    ['zstd -12', ['--compress', 'zstd', '--level', '12']],
    ['zstd -19', ['--compress', 'zstd', '--level', '19']],
    ['gzip -6', ['--compress', 'gzip']],
    ['none', ['--compress', 'none']],
    ['zstd -9, node not stripped', ['--no-strip']],
  ];
  for (const [name, extra] of variants) {
    const r = build(join(work, 'variant'), extra);
    lines.push(`| ${name} | ${MB(r.summary.initrd.bytes)} MB | ${r.seconds.toFixed(1)} s |`);
    log(`${name}: ${MB(r.summary.initrd.bytes)} MB in ${r.seconds.toFixed(1)} s`);
  }
  lines.push('');

  // Boot to the self-test verdict, and modprobe flavours.
  const final = build(out);
  const bbInitrd = join(work, 'initrd-busybox-modprobe.img');
  busyboxModprobeVariant(join(out, 'initrd.img'), bbInitrd);
  const kmodBoots: BootTimes[] = [];
  const bbBoots: BootTimes[] = [];
  for (let i = 0; i < BOOTS; i++) {
    kmodBoots.push(await boot(join(out, 'vmlinuz'), join(out, 'initrd.img'), `stf5-bench-kmod-${i}`));
    bbBoots.push(await boot(join(out, 'vmlinuz'), bbInitrd, `stf5-bench-busybox-${i}`));
    log(`boot ${i + 1}: kmod ${JSON.stringify(kmodBoots.at(-1))} busybox ${JSON.stringify(bbBoots.at(-1))}`);
  }
  const med = (xs: BootTimes[], k: keyof BootTimes): string => median(xs.map((x) => x[k])).toFixed(1);
  const coldplug = (xs: BootTimes[]): string => median(xs.map((x) => x.modulesLoaded - x.initStart)).toFixed(2);
  lines.push(`QEMU (TCG, 1 vCPU, 512 MiB), ${MB(final.summary.initrd.bytes)} MB initrd, median of ${BOOTS} boots:`);
  lines.push('');
  lines.push('| step | time |', '| --- | --- |');
  lines.push(`| QEMU start to STIEFEL-SELFTEST-OK (wall clock) | ${med(kmodBoots, 'wall')} s |`);
  lines.push(`| guest uptime: initrd unpacked ("Freeing initrd memory") | ${med(kmodBoots, 'initrdFreed')} s |`);
  lines.push(`| guest uptime: /init running | ${med(kmodBoots, 'initStart')} s |`);
  lines.push(`| guest uptime: coldplug modules loaded | ${med(kmodBoots, 'modulesLoaded')} s |`);
  lines.push(`| guest uptime: STIEFEL-SELFTEST-OK | ${med(kmodBoots, 'okUptime')} s |`);
  lines.push('');
  lines.push('| coldplug module loading (/init start to "modules loaded") | median |', '| --- | --- |');
  lines.push(`| kmod modprobe (used) | ${coldplug(kmodBoots)} s |`);
  lines.push(`| busybox modprobe | ${coldplug(bbBoots)} s |`);
  lines.push('');
  log(`load after: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(work, { recursive: true, force: true }));
