// npm run bench:iso [-- --runs N]
//
// The ISO download inside stiefelOS against curl in the same VM, in one run,
// alternating: a VM boots stiefelOS (built here with curl added, role
// rescue) on the ISO lab's network (test/helpers/iso-lab.ts: an HTTP server
// in a network namespace) and fetches Debian's netboot mini.iso (assembled
// by test/helpers/mini-iso.ts) N times with each. Ours also hashes (SHA-256)
// what it writes and checks it; curl only writes. Software-emulated QEMU:
// the ratio carries over, the MB/s are this machine's.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { CLI } from '../test/helpers/cli';
import { debianKernel } from '../test/helpers/kernel';
import { makeMiniIso } from '../test/helpers/mini-iso';
import { startIsoLab } from '../test/helpers/iso-lab';
import { startVm } from '../test/helpers/qemu';

const run = promisify(execFile);
const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' } } });
const runs = Number(values.runs);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespace, QEMU taps)');
  const work = mkdtempSync(join(tmpdir(), 'stf-bench-iso-'));
  const lab = await startIsoLab(`stf6-biso-${randomBytes(3).toString('hex')}`, join(work, 'www'), join(work, 'leases')).catch(async (e) => {
    rmSync(work, { recursive: true, force: true });
    throw e;
  });
  try {
    mkdirSync(join(work, 'www'), { recursive: true });
    const iso = makeMiniIso(work);
    await run('cp', [iso, join(work, 'www', 'mini.iso')]);
    const mb = statSync(iso).size / 1e6;
    const sha = createHash('sha256').update(readFileSync(iso)).digest('hex');
    console.error(`building stiefelOS with curl (build-image --add-program curl)`);
    await run(process.execPath, [CLI, 'build-image', '--kernel', debianKernel().path, '--out', join(work, 'os'), '--add-program', 'curl', '--level', '3'], { maxBuffer: 16 << 20 });
    const vm = startVm({
      name: 'stf6-bench-iso',
      kernel: join(work, 'os', 'vmlinuz'),
      initrd: join(work, 'os', 'initrd.img'),
      append: 'console=ttyS0 stiefel.role=rescue panic=-1',
      memoryMiB: 2048,
      nics: [{ netdev: { type: 'tap', ifname: 'stf6cli' } }],
      netns: lab.netns,
    });
    try {
      await vm.waitFor(/starting a rescue shell/, 300_000);
      const sh = async (cmd: string, done: RegExp, timeoutMs = 300_000): Promise<RegExpMatchArray> => {
        const from = vm.console.length;
        vm.send(`${cmd}\n`);
        return vm.waitFor(done, timeoutMs, from);
      };
      await sh('ip link set eth0 up && ip addr add 10.99.0.50/24 dev eth0 && ip route add default via 10.99.0.1 && sleep 2 && echo NET-READY', /^NET-READY/m);
      const url = lab.url('mini.iso');
      const curl: number[] = [];
      const curlSha: number[] = [];
      const ours: number[] = [];
      for (let i = 0; i < runs; i++) {
        const c = await sh(`a=$(cut -d' ' -f1 /proc/uptime); curl -sS -o /run/c.iso ${url}; b=$(cut -d' ' -f1 /proc/uptime); rm -f /run/c.iso; echo "CURL-DONE $a $b"`, /^CURL-DONE ([\d.]+) ([\d.]+)/m);
        curl.push(Number(c[2]) - Number(c[1]));
        // The same work as ours: written and hashed (busybox sha256sum reads the stream as curl writes it).
        const h = await sh(`a=$(cut -d' ' -f1 /proc/uptime); curl -sS ${url} | tee /run/c.iso | sha256sum >/dev/null; b=$(cut -d' ' -f1 /proc/uptime); rm -f /run/c.iso; echo "CURLSHA-DONE $a $b"`, /^CURLSHA-DONE ([\d.]+) ([\d.]+)/m);
        curlSha.push(Number(h[2]) - Number(h[1]));
        const o = await sh(`stiefelctl iso boot ${url} --sha256 ${sha} --no-kexec --out /run/o${i} 2>&1 | grep -o 'in [0-9.]* s;' ; rm -rf /run/o${i}; echo OURS-DONE`, /^in ([\d.]+) s;[\s\S]*?OURS-DONE/m);
        ours.push(Number(o[1]));
        console.error(`run ${i + 1}: curl ${curl.at(-1)!.toFixed(2)} s, curl | tee | sha256sum ${curlSha.at(-1)!.toFixed(2)} s, stiefelctl ${ours.at(-1)!.toFixed(2)} s`);
      }
      const c = median(curl);
      const ch = median(curlSha);
      const o = median(ours);
      console.log(
        [
          `ISO download inside the VM (${mb.toFixed(1)} MB over HTTP, median of ${runs}):`,
          '',
          '| | seconds | MB/s |',
          '| --- | --- | --- |',
          `| curl (writes only) | ${c.toFixed(2)} | ${(mb / c).toFixed(1)} |`,
          `| curl, tee, busybox sha256sum (writes and hashes) | ${ch.toFixed(2)} | ${(mb / ch).toFixed(1)} |`,
          `| stiefelctl iso boot (download + SHA-256) | ${o.toFixed(2)} | ${(mb / o).toFixed(1)} |`,
          '',
          `ours / curl throughput: ${(c / o).toFixed(2)}x; ours / curl with sha256sum: ${(ch / o).toFixed(2)}x`,
        ].join('\n'),
      );
    } finally {
      await vm.stop();
    }
  } finally {
    await lab.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
