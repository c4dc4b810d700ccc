// npm run bench:e2e [-- --runs N --family initramfs-tools|dracut]
//
// The end-to-end boot (test/helpers/e2e.ts), measured: time from the desktop
// VM's start to the laptop OS's marker, split by stage, and the network
// disk's sequential read and write throughput measured with dd inside the
// booted laptop OS, with the disk link through WireGuard and without (in the
// same run, alternating). Software-emulated QEMU: absolute figures are those
// of this machine class, not of real hardware; the WireGuard ratio is the
// figure that carries over.
import { parseArgs } from 'node:util';
import { E2E_CACHE_DIR, runEndToEnd, type EndToEndResult } from '../test/helpers/e2e';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '2' },
    family: { type: 'string', default: 'initramfs-tools' },
  },
});
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

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespace, loop mounts, QEMU taps)');
  const results: Record<'wireguard' | 'plain', EndToEndResult[]> = { wireguard: [], plain: [] };
  for (let i = 0; i < runs; i++) {
    for (const mode of ['wireguard', 'plain'] as const) {
      process.stderr.write(`run ${i + 1}/${runs}, ${mode}...\n`);
      const r = await runEndToEnd({
        family,
        cacheDir: E2E_CACHE_DIR,
        wireguard: mode === 'wireguard',
        bench: true,
        timeScale: 3,
        log: (line) => process.stderr.write(`  ${line}\n`),
        consoleDir: `/tmp/stf6-bench-consoles/${mode}`,
      });
      results[mode].push(r);
    }
  }
  const stageNames = results.wireguard[0]!.stages.map((s) => s.name);
  const lines: string[] = [];
  lines.push(`End-to-end boot, ${family}, ${runs} run(s) each, medians (seconds from the desktop VM's start):`);
  lines.push('');
  lines.push('| stage | with WireGuard | without |');
  lines.push('| --- | --- | --- |');
  for (const name of stageNames) {
    const m = (mode: 'wireguard' | 'plain'): string => median(results[mode].map((r) => r.stages.find((s) => s.name === name)!.seconds)).toFixed(1);
    lines.push(`| ${name} | ${m('wireguard')} | ${m('plain')} |`);
  }
  lines.push(
    `| **total to the marker** | **${median(results.wireguard.map((r) => r.totalSeconds)).toFixed(1)}** | **${median(results.plain.map((r) => r.totalSeconds)).toFixed(1)}** |`,
  );
  lines.push('');
  const rate = (mode: 'wireguard' | 'plain', which: 'read' | 'write'): number => median(results[mode].map((r) => ddRate(r.bench?.[which])));
  lines.push('| network disk, inside the laptop OS (dd, direct I/O) | with WireGuard | without | WireGuard / without |');
  lines.push('| --- | --- | --- | --- |');
  for (const which of ['read', 'write'] as const) {
    const wg = rate('wireguard', which);
    const plain = rate('plain', which);
    lines.push(`| sequential ${which} | ${wg.toFixed(1)} MB/s | ${plain.toFixed(1)} MB/s | ${(wg / plain).toFixed(2)} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:e2e failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
