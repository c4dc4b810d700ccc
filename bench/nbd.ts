// npm run bench:nbd -- [--rounds N] [--seconds S] [--size-mib M]
//
// The same workloads against our server (`stiefelctl nbd-serve`), nbdkit's
// file plugin and nbd-server, all serving a copy of the same file over TCP
// loopback, interleaved in one run (round 1: ours, nbdkit, nbd-server; round
// 2: ...) so that load from elsewhere hits everyone alike. Prints medians,
// min-max spreads and the ratios ours/peer.
//   seq read    nbdcopy URI null:           (GB/s, and server CPU s per GiB)
//   seq write   nbdcopy FILE URI            (GB/s, and server CPU s per GiB)
//   rand read   fio ioengine=nbd, 4 KiB, QD32, 1 job   (IOPS, server CPU us per op)
//   rand write  fio ioengine=nbd, 4 KiB, QD32, 1 job   (IOPS, server CPU us per op)
// Server CPU is utime+stime (+ reaped children: nbd-server forks per client)
// from /proc/PID/stat.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, seconds: { type: 'string', default: '8' }, 'size-mib': { type: 'string', default: '1024' } },
});
const ROUNDS = Number(values.rounds);
const SECONDS = Number(values.seconds);
const SIZE = Number(values['size-mib']) * 1024 * 1024;
const GiB = 1024 ** 3;
const ROOT = join(__dirname, '..');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

interface Server {
  name: string;
  uri: string;
  pid: () => number;
  proc?: ChildProcess;
  stop(): void;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect({ port, host: '127.0.0.1' }, () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields 14-17 (1-based) are utime stime cutime cstime; f[0] is field 3.
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
}

async function startOurs(file: string): Promise<Server> {
  const port = await freePort();
  const proc = spawn(process.execPath, [join(ROOT, 'dist', 'stiefelctl.js'), 'nbd-serve', file, '--listen', `127.0.0.1:${port}`, '--name', 'bench'], {
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  await waitPort(port);
  return { name: 'ours', uri: `nbd://127.0.0.1:${port}/bench`, pid: () => proc.pid!, proc, stop: () => proc.kill('SIGINT') };
}

async function startNbdkit(file: string): Promise<Server> {
  const port = await freePort();
  const proc = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'file', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitPort(port);
  return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/`, pid: () => proc.pid!, proc, stop: () => proc.kill('SIGTERM') };
}

async function startNbdServer(file: string, dir: string): Promise<Server> {
  const port = await freePort();
  const conf = join(dir, 'nbd-server.conf');
  const pidFile = join(dir, 'nbd-server.pid');
  writeFileSync(conf, `[generic]\n  listenaddr = 127.0.0.1\n  port = ${port}\n[bench]\n  exportname = ${file}\n  flush = true\n  fua = true\n  trim = true\n`);
  execFileSync('nbd-server', ['-C', conf, '-p', pidFile], { stdio: 'ignore' });
  await waitPort(port);
  const pid = (): number => Number(readFileSync(pidFile, 'utf8').trim());
  return { name: 'nbd-server', uri: `nbd://127.0.0.1:${port}/bench`, pid, stop: () => process.kill(pid(), 'SIGTERM') };
}

type Workload = 'seq read' | 'seq write' | 'rand read' | 'rand write';
const WORKLOADS: Workload[] = ['seq read', 'seq write', 'rand read', 'rand write'];

interface Sample {
  value: number; // GB/s or IOPS
  cpu: number; // s per GiB or us per op
}

function run(w: Workload, s: Server, src: string): Sample {
  const pid = s.pid();
  const c0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  let ops = 0;
  let bytes = 0;
  if (w === 'seq read') {
    execFileSync('nbdcopy', [s.uri, 'null:'], { stdio: 'inherit' });
    bytes = SIZE;
  } else if (w === 'seq write') {
    execFileSync('nbdcopy', [src, s.uri], { stdio: 'inherit' });
    bytes = SIZE;
  } else {
    const out = execFileSync(
      'fio',
      [
        '--name=b',
        '--ioengine=nbd',
        `--uri=${s.uri}`,
        `--rw=${w === 'rand read' ? 'randread' : 'randwrite'}`,
        '--bs=4k',
        '--iodepth=32',
        '--numjobs=1',
        `--runtime=${SECONDS}`,
        '--time_based',
        '--output-format=json',
      ],
      { encoding: 'utf8' },
    );
    const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
    const side = w === 'rand read' ? job.read : job.write;
    ops = side.total_ios;
    bytes = side.io_bytes;
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  // Let nbd-server reap its per-connection children so their CPU is counted.
  execFileSync('sleep', ['0.3']);
  const cpu = cpuSeconds(pid) - c0;
  if (ops > 0) return { value: ops / SECONDS, cpu: (cpu / ops) * 1e6 };
  return { value: bytes / wall / 1e9, cpu: cpu / (bytes / GiB) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  for (const tool of ['nbdkit', 'nbd-server', 'nbdcopy', 'fio']) execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'stf2-bench-'));
  const servers: Server[] = [];
  try {
    console.log(`# making a ${SIZE / 2 ** 20} MiB random source image in ${dir}`);
    const src = join(dir, 'src.img');
    const fd = openSync(src, 'w');
    const chunk = Buffer.allocUnsafe(16 * 1024 * 1024);
    for (let off = 0; off < SIZE; off += chunk.length) writeSync(fd, randomFillSync(chunk), 0, Math.min(chunk.length, SIZE - off));
    closeSync(fd);
    // Each server gets its own fully written copy (same bytes, no holes).
    const files = ['ours', 'nbdkit', 'nbd-server'].map((n) => {
      const f = join(dir, `${n}.img`);
      copyFileSync(src, f);
      return f;
    });
    servers.push(await startOurs(files[0]!), await startNbdkit(files[1]!), await startNbdServer(files[2]!, dir));
    const samples = new Map<string, Sample[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const w of WORKLOADS) {
        // Rotate the order each round so no server always goes first.
        for (let i = 0; i < servers.length; i++) {
          const s = servers[(i + round) % servers.length]!;
          const r = run(w, s, src);
          const key = `${w}|${s.name}`;
          samples.set(key, [...(samples.get(key) ?? []), r]);
          console.log(`round ${round} ${w.padEnd(10)} ${s.name.padEnd(10)} ${w.startsWith('seq') ? `${r.value.toFixed(2)} GB/s  ${r.cpu.toFixed(3)} CPU s/GiB` : `${Math.round(r.value)} IOPS  ${r.cpu.toFixed(1)} CPU us/op`}`);
        }
      }
    }
    console.log(`\n## medians of ${ROUNDS} rounds (min-max), ratios ours/peer (throughput: higher is better; CPU: lower is better)\n`);
    console.log('| workload | ours | nbdkit | nbd-server | ours/nbdkit | ours/nbd-server |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const w of WORKLOADS) {
      const unit = w.startsWith('seq') ? 'GB/s' : 'IOPS';
      const cpuUnit = w.startsWith('seq') ? 'CPU s/GiB' : 'CPU us/op';
      const fmt = (x: number): string => (unit === 'GB/s' ? x.toFixed(2) : String(Math.round(x)));
      const fmtC = (x: number): string => (unit === 'GB/s' ? x.toFixed(3) : x.toFixed(1));
      const get = (n: string): Sample[] => samples.get(`${w}|${n}`)!;
      const med = (n: string, k: 'value' | 'cpu'): number => median(get(n).map((s) => s[k]));
      const cell = (n: string, k: 'value' | 'cpu'): string => {
        const xs = get(n).map((s) => s[k]);
        const f = k === 'value' ? fmt : fmtC;
        return `${f(median(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
      };
      console.log(`| ${w} ${unit} | ${cell('ours', 'value')} | ${cell('nbdkit', 'value')} | ${cell('nbd-server', 'value')} | ${(med('ours', 'value') / med('nbdkit', 'value')).toFixed(2)} | ${(med('ours', 'value') / med('nbd-server', 'value')).toFixed(2)} |`);
      console.log(`| ${w} ${cpuUnit} | ${cell('ours', 'cpu')} | ${cell('nbdkit', 'cpu')} | ${cell('nbd-server', 'cpu')} | ${(med('ours', 'cpu') / med('nbdkit', 'cpu')).toFixed(2)} | ${(med('ours', 'cpu') / med('nbd-server', 'cpu')).toFixed(2)} |`);
    }
  } finally {
    for (const s of servers) {
      try {
        s.stop();
      } catch {
        // already gone
      }
    }
    await new Promise((r) => setTimeout(r, 500));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
