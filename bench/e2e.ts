// npm run bench:e2e [-- --runs N --family initramfs-tools|dracut --compare wireguard|mtu|connections|local]
//
// The end-to-end boot (test/helpers/e2e.ts), measured: time from the desktop
// VM's start to the laptop OS's marker, split by stage, and the network
// disk's sequential read and write throughput measured with dd inside the
// booted laptop OS, in two or three setups alternating in the same run:
//   --compare wireguard (default): the disk link through WireGuard and without;
//   --compare mtu: through WireGuard, link.mtu 9000 (jumbo frames) and 1500;
//   --compare connections: through WireGuard, server.nbd.connections 1, 2 and 4
//     (nbd-client -C), the desktop VM with two CPUs in each; besides one dd,
//     two dd readers at once (the block layer gives each CPU's requests to
//     one connection);
//   --compare local: the boot a person waits for against its floor, the same
//     laptop image booted locally in the same emulator (test/helpers/local-boot.ts):
//     seconds to the marker, and their ratio (no dd: only the boot is timed).
// Software-emulated QEMU: absolute figures are those of this machine class,
// not of real hardware; the ratios are the figures that carry over.
import { parseArgs } from 'node:util';
import { E2E_CACHE_DIR, runEndToEnd, type EndToEndResult } from '../test/helpers/e2e';
import { bootLaptopLocally, type LocalBootResult } from '../test/helpers/local-boot';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '2' },
    family: { type: 'string', default: 'initramfs-tools' },
    compare: { type: 'string', default: 'wireguard' },
  },
});
if (!['wireguard', 'mtu', 'connections', 'local'].includes(values.compare)) throw new Error(`--compare takes wireguard, mtu, connections or local, not '${values.compare}'`);
const compare = values.compare;
const runs = Number(values.runs);
const family = values.family === 'dracut' ? 'dracut' : 'initramfs-tools';

/** MB/s from dd's last line: "268435456 bytes (268 MB, 256 MiB) copied, 12.3 s, 21.8 MB/s". */
function ddRate(line: string | undefined): number {
  const m = /copied, ([\d.]+) s/.exec(line ?? '');
  const bytes = /^(\d+) bytes/.exec(line ?? '');
  if (!m || !bytes) return NaN;
  return Number(bytes[1]) / 1e6 / Number(m[1]);
}

const median = (xs: number[]): number => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

/** MB/s from the two readers' line: "268435456 bytes in 12345 ms". */
function pairRate(line: string | undefined): number {
  const m = /^(\d+) bytes in (\d+) ms/.exec(line ?? '');
  return m ? Number(m[1]) / 1e3 / Number(m[2]) : NaN;
}

interface Setup {
  name: string;
  wireguard: boolean;
  mtu?: number;
  nbdConnections?: number;
  desktopCpus?: number;
}

const SETUPS: Setup[] =
  compare === 'mtu'
    ? [
        { name: 'MTU 9000', wireguard: true, mtu: 9000 },
        { name: 'MTU 1500', wireguard: true },
      ]
    : compare === 'connections'
    ? [1, 2, 4].map((n) => ({ name: `${n} connection${n > 1 ? 's' : ''}`, wireguard: true, nbdConnections: n, desktopCpus: 2 }))
    : [
        { name: 'with WireGuard', wireguard: true },
        { name: 'without', wireguard: false },
      ];

/** The end-to-end boot (through WireGuard) against the same image booted locally, alternating. */
async function againstLocal(): Promise<void> {
  const over: EndToEndResult[] = [];
  const local: LocalBootResult[] = [];
  const log = (line: string): void => void process.stderr.write(`  ${line}\n`);
  for (let i = 0; i < runs; i++) {
    process.stderr.write(`run ${i + 1}/${runs}, over the cable...\n`);
    over.push(await runEndToEnd({ family, cacheDir: E2E_CACHE_DIR, wireguard: true, timeScale: 3, log, consoleDir: '/tmp/stf6-bench-consoles/over-the-cable' }));
    process.stderr.write(`run ${i + 1}/${runs}, locally...\n`);
    local.push(await bootLaptopLocally({ family, cacheDir: E2E_CACHE_DIR, timeScale: 3, log }));
  }
  const lines: string[] = [];
  lines.push(`The laptop OS (${family}) booted on the desktop over the cable (stiefelOS by -kernel, through WireGuard) against the same image booted locally (-kernel, its disk as virtio); ${runs} run(s) each, medians in seconds from the VM's start:`);
  lines.push('');
  lines.push('| stage | over the cable | locally |');
  lines.push('| --- | ---: | ---: |');
  for (const name of over[0]!.stages.map((s) => s.name)) {
    lines.push(`| ${name} | ${median(over.map((r) => r.stages.find((s) => s.name === name)!.seconds)).toFixed(1)} | |`);
  }
  for (const name of local[0]!.stages.map((s) => s.name)) {
    lines.push(`| ${name} | | ${median(local.map((r) => r.stages.find((s) => s.name === name)!.seconds)).toFixed(1)} |`);
  }
  const a = median(over.map((r) => r.totalSeconds));
  const b = median(local.map((r) => r.totalSeconds));
  lines.push(`| **total to the marker** | **${a.toFixed(1)}** | **${b.toFixed(1)}** |`);
  lines.push('');
  lines.push(`Over the cable / locally: ${(a / b).toFixed(2)}x (runs: ${over.map((r, i) => `${r.totalSeconds.toFixed(1)}/${local[i]!.totalSeconds.toFixed(1)}`).join(', ')}).`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespace, loop mounts, QEMU taps)');
  if (compare === 'local') return againstLocal();
  const results: EndToEndResult[][] = SETUPS.map(() => []);
  for (let i = 0; i < runs; i++) {
    for (const [k, setup] of SETUPS.entries()) {
      process.stderr.write(`run ${i + 1}/${runs}, ${setup.name}...\n`);
      const r = await runEndToEnd({
        family,
        cacheDir: E2E_CACHE_DIR,
        wireguard: setup.wireguard,
        mtu: setup.mtu,
        nbdConnections: setup.nbdConnections,
        desktopCpus: setup.desktopCpus,
        bench: true,
        timeScale: 3,
        log: (line) => process.stderr.write(`  ${line}\n`),
        consoleDir: `/tmp/stf6-bench-consoles/${setup.name.replace(/\W+/g, '-')}`,
      });
      process.stderr.write(`  the desktop's link and tunnel MTU: ${r.desktopMtu}\n`);
      if (setup.mtu && !r.desktopMtu.startsWith(`${setup.mtu} `)) throw new Error(`asked for MTU ${setup.mtu}, the desktop's link has ${r.desktopMtu}`);
      if (r.diskConnections !== (setup.nbdConnections ?? 1)) throw new Error(`asked for ${setup.nbdConnections ?? 1} disk connections, the laptop admitted ${r.diskConnections}`);
      results[k]!.push(r);
    }
  }
  const stageNames = results[0]![0]!.stages.map((s) => s.name);
  const names = SETUPS.map((s) => s.name);
  const lines: string[] = [];
  lines.push(`End-to-end boot, ${family}, ${runs} run(s) each, medians (seconds from the desktop VM's start):`);
  lines.push('');
  lines.push(`| stage | ${names.join(' | ')} |`);
  lines.push(`| --- |${' --- |'.repeat(names.length)}`);
  for (const name of stageNames) {
    const m = (k: number): string => median(results[k]!.map((r) => r.stages.find((s) => s.name === name)!.seconds)).toFixed(1);
    lines.push(`| ${name} | ${SETUPS.map((_, k) => m(k)).join(' | ')} |`);
  }
  const total = (k: number): string => median(results[k]!.map((r) => r.totalSeconds)).toFixed(1);
  lines.push(`| **total to the marker** | ${SETUPS.map((_, k) => `**${total(k)}**`).join(' | ')} |`);
  lines.push('');
  // Each setup's rate, and its ratio to the first setup's.
  const others = names.slice(1);
  lines.push(`| network disk, inside the laptop OS (dd, direct I/O) | ${names.join(' | ')} | ${others.map((n) => `${n} / ${names[0]}`).join(' | ')} |`);
  lines.push(`| --- |${' --- |'.repeat(names.length + others.length)}`);
  const metrics: Array<[string, (r: EndToEndResult) => number]> = [
    ['sequential read', (r) => ddRate(r.bench?.read)],
    ['sequential write', (r) => ddRate(r.bench?.write)],
  ];
  if (compare === 'connections') metrics.push(['two readers at once', (r) => pairRate(r.bench?.readPair)]);
  for (const [label, of] of metrics) {
    const rates = SETUPS.map((_, k) => median(results[k]!.map(of)));
    lines.push(`| ${label} | ${rates.map((x) => `${x.toFixed(1)} MB/s`).join(' | ')} | ${rates.slice(1).map((x) => (x / rates[0]!).toFixed(2)).join(' | ')} |`);
  }
  lines.push('');
  lines.push(`The desktop's link and tunnel MTU: ${SETUPS.map((s, k) => `${s.name}: ${results[k]![0]!.desktopMtu}`).join('; ')}.`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:e2e failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
