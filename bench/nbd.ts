// npm run bench:nbd -- [--rounds N] [--seconds S] [--size-mib M] [--peers nbdkit,nbd-server]
//                      [--workloads 'seq read,seq write,rand read,rand write'] [--baseline OLD.js]
//                      [--workers N] [--emulate]
//
// --emulate runs every server under qemu-user on CPU 0 and the clients on
// CPU 1 (bench/emulate.ts): the cost of each server's user space per
// request, weighted as in the VM tests' emulated laptop.
//
// --workers N adds our server once more as "ours-wN", serving its
// connections in N worker processes (`nbd-serve --workers N`).
//
// --baseline OLD.js adds another build of stiefelctl (e.g. main's
// dist/stiefelctl.js, copied aside) as the server "before", interleaved with
// the others, to compare a change with what it replaces in one run;
// --baseline NAME=A.js,NAME2=B.js adds several, named.
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
//   rand read qd1  fio ioengine=nbd, 4 KiB, QD1, 1 job (IOPS, server CPU us per op, latency p50/p99 us)
// Server CPU is utime+stime (+ reaped children: nbd-server forks per client)
// from /proc/PID/stat.
//
// npm run bench:nbd -- --floods [--peers nbdkit] [--baseline OLD.js] [--flood NAME,...]
//
// Instead: the floods of a hostile client (test/helpers/nbd-floods.ts), each
// against a freshly started server of each kind serving a copy of one
// 128 MiB file with 4,096 extents; prints each server's peak RSS during the
// flood (VmHWM after the flood settled; the peak is reset once the server
// is up) and what else the flood costs (bytes read, child processes).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  ProcessProbe,
  blockStatusFlood,
  cacheFlood,
  maxChildren,
  optionInfoFlood,
  readFlood,
  trimFlood,
  zeroReadFlood,
  type FloodTarget,
} from '../test/helpers/nbd-floods';
import { makeExtentImage } from '../test/helpers/nbd-images';
import { emulated, pinned } from './emulate';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '8' },
    'size-mib': { type: 'string', default: '1024' },
    peers: { type: 'string', default: 'nbdkit,nbd-server' },
    baseline: { type: 'string' },
    workloads: { type: 'string', default: 'seq read,seq write,rand read,rand write,rand read qd1' },
    floods: { type: 'boolean', default: false },
    flood: { type: 'string' },
    workers: { type: 'string' },
    emulate: { type: 'boolean', default: false },
  },
});
const EMULATE = values.emulate;
const PEERS = values.peers.split(',').filter(Boolean);
/** Other builds of stiefelctl to compare: [name, bundle]. */
const BASELINES: Array<[string, string]> = (values.baseline ?? '')
  .split(',')
  .filter(Boolean)
  .map((b) => (b.includes('=') ? [b.slice(0, b.indexOf('=')), b.slice(b.indexOf('=') + 1)] : ['before', b]));
for (const p of PEERS) if (p !== 'nbdkit' && p !== 'nbd-server') throw new Error(`--peers: unknown server '${p}' (nbdkit, nbd-server)`);
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

/** CPU of the process, its reaped children and, recursively, its live ones (our worker processes). */
function cpuSeconds(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0; // exited in between
  }
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields 14-17 (1-based) are utime stime cutime cstime; f[0] is field 3.
  let total = (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
  let children = '';
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
  } catch {
    // no such file: no children counted
  }
  for (const c of children.split(' ').filter(Boolean)) total += cpuSeconds(Number(c));
  return total;
}

async function startOurs(file: string, bundle = join(ROOT, 'dist', 'stiefelctl.js'), name = 'ours', extra: string[] = []): Promise<Server> {
  const port = await freePort();
  const [cmd, args] = emulated(EMULATE, 0, process.execPath, [bundle, 'nbd-serve', file, '--listen', `127.0.0.1:${port}`, '--name', 'bench', ...extra]);
  const proc = spawn(cmd, args, {
    stdio: ['ignore', 'ignore', 'ignore'],
  });
  await waitPort(port);
  return { name, uri: `nbd://127.0.0.1:${port}/bench`, pid: () => proc.pid!, proc, stop: () => proc.kill('SIGINT') };
}

/** nbdkit; `logTail` keeps the end of its stderr instead of showing it (floods make it log per request). */
async function startNbdkit(file: string, logTail?: { text: string }): Promise<Server> {
  const port = await freePort();
  const [cmd, args] = emulated(EMULATE, 0, 'nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'file', file]);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', logTail ? 'pipe' : 'inherit'] });
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
    if (logTail) logTail.text = (logTail.text + d).slice(-2000);
  });
  await waitPort(port);
  return { name: 'nbdkit', uri: `nbd://127.0.0.1:${port}/`, pid: () => proc.pid!, proc, stop: () => proc.kill('SIGTERM') };
}

async function startNbdServer(file: string, dir: string): Promise<Server> {
  const port = await freePort();
  const conf = join(dir, 'nbd-server.conf');
  const pidFile = join(dir, 'nbd-server.pid');
  writeFileSync(conf, `[generic]\n  listenaddr = 127.0.0.1\n  port = ${port}\n[bench]\n  exportname = ${file}\n  flush = true\n  fua = true\n  trim = true\n`);
  execFileSync(...emulated(EMULATE, 0, 'nbd-server', ['-C', conf, '-p', pidFile]), { stdio: 'ignore' });
  await waitPort(port);
  const pid = (): number => Number(readFileSync(pidFile, 'utf8').trim());
  return { name: 'nbd-server', uri: `nbd://127.0.0.1:${port}/bench`, pid, stop: () => process.kill(pid(), 'SIGTERM') };
}

type Workload = 'seq read' | 'seq write' | 'rand read' | 'rand write' | 'rand read qd1';
const ALL_WORKLOADS: Workload[] = ['seq read', 'seq write', 'rand read', 'rand write', 'rand read qd1'];
const WORKLOADS = values.workloads.split(',').map((w) => {
  if (!ALL_WORKLOADS.includes(w as Workload)) throw new Error(`--workloads: unknown workload '${w}' (${ALL_WORKLOADS.join(', ')})`);
  return w as Workload;
});

interface Sample {
  value: number; // GB/s or IOPS
  cpu: number; // s per GiB or us per op
  /** Completion latency percentiles in us (fio's clat), for the random workloads. */
  p50?: number;
  p99?: number;
}

function run(w: Workload, s: Server, src: string): Sample {
  const pid = s.pid();
  const c0 = cpuSeconds(pid);
  const t0 = process.hrtime.bigint();
  let ops = 0;
  let bytes = 0;
  let latency: { p50: number; p99: number } | undefined;
  if (w === 'seq read') {
    execFileSync(...pinned(EMULATE, 1, 'nbdcopy', [s.uri, 'null:']), { stdio: 'inherit' });
    bytes = SIZE;
  } else if (w === 'seq write') {
    execFileSync(...pinned(EMULATE, 1, 'nbdcopy', [src, s.uri]), { stdio: 'inherit' });
    bytes = SIZE;
  } else {
    const out = execFileSync(
      ...pinned(EMULATE, 1, 'fio', [
        '--name=b',
        '--ioengine=nbd',
        `--uri=${s.uri}`,
        `--rw=${w === 'rand write' ? 'randwrite' : 'randread'}`,
        '--bs=4k',
        `--iodepth=${w === 'rand read qd1' ? 1 : 32}`,
        '--numjobs=1',
        `--runtime=${SECONDS}`,
        '--time_based',
        '--output-format=json',
      ]),
      { encoding: 'utf8' },
    );
    const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
    const side = w === 'rand write' ? job.write : job.read;
    ops = side.total_ios;
    bytes = side.io_bytes;
    const pct = side.clat_ns?.percentile ?? {};
    latency = { p50: Number(pct['50.000000']) / 1000, p99: Number(pct['99.000000']) / 1000 };
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  // Let nbd-server reap its per-connection children so their CPU is counted.
  execFileSync('sleep', ['0.3']);
  const cpu = cpuSeconds(pid) - c0;
  if (ops > 0) return { value: ops / SECONDS, cpu: (cpu / ops) * 1e6, ...latency };
  return { value: bytes / wall / 1e9, cpu: cpu / (bytes / GiB) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  for (const tool of [...PEERS, 'nbdcopy', 'fio']) execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
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
    const copy = (n: string): string => {
      const f = join(dir, `${n}.img`);
      copyFileSync(src, f);
      return f;
    };
    servers.push(await startOurs(copy('ours')));
    if (values.workers) servers.push(await startOurs(copy('workers'), undefined, `ours-w${values.workers}`, ['--workers', values.workers]));
    for (const [name, bundle] of BASELINES) servers.push(await startOurs(copy(name), bundle, name));
    if (PEERS.includes('nbdkit')) servers.push(await startNbdkit(copy('nbdkit')));
    if (PEERS.includes('nbd-server')) servers.push(await startNbdServer(copy('nbd-server'), dir));
    const samples = new Map<string, Sample[]>();
    for (let round = 1; round <= ROUNDS; round++) {
      for (const w of WORKLOADS) {
        // Rotate the order each round so no server always goes first.
        for (let i = 0; i < servers.length; i++) {
          const s = servers[(i + round) % servers.length]!;
          const r = run(w, s, src);
          const key = `${w}|${s.name}`;
          samples.set(key, [...(samples.get(key) ?? []), r]);
          const lat = r.p50 === undefined ? '' : `  p50 ${r.p50.toFixed(1)} us  p99 ${r.p99!.toFixed(1)} us`;
          console.log(`round ${round} ${w.padEnd(13)} ${s.name.padEnd(10)} ${w.startsWith('seq') ? `${r.value.toFixed(2)} GB/s  ${r.cpu.toFixed(3)} CPU s/GiB` : `${Math.round(r.value)} IOPS  ${r.cpu.toFixed(1)} CPU us/op${lat}`}`);
        }
      }
    }
    // Ratios: "ours" against every other server, and "ours-wN" (if run) against the peers.
    const names = servers.map((x) => x.name);
    const pairs: Array<[string, string]> = names.slice(1).map((o) => ['ours', o]);
    const withWorkers = names.find((n) => n.startsWith('ours-w'));
    if (withWorkers) for (const o of names.filter((n) => !n.startsWith('ours'))) pairs.push([withWorkers, o]);
    console.log(`\n## medians of ${ROUNDS} rounds (min-max), ratios ours/peer (throughput: higher is better; CPU: lower is better)\n`);
    console.log(`| workload | ${names.join(' | ')} | ${pairs.map(([a, b]) => `${a}/${b}`).join(' | ')} |`);
    console.log(`| --- | ${servers.map(() => '---').join(' | ')} | ${pairs.map(() => '---').join(' | ')} |`);
    for (const w of WORKLOADS) {
      const unit = w.startsWith('seq') ? 'GB/s' : 'IOPS';
      const cpuUnit = w.startsWith('seq') ? 'CPU s/GiB' : 'CPU us/op';
      const fmt = (x: number): string => (unit === 'GB/s' ? x.toFixed(2) : String(Math.round(x)));
      const fmtC = (x: number): string => (unit === 'GB/s' ? x.toFixed(3) : x.toFixed(1));
      const get = (n: string): Sample[] => samples.get(`${w}|${n}`)!;
      type Key = 'value' | 'cpu' | 'p50' | 'p99';
      const med = (n: string, k: Key): number => median(get(n).map((s) => s[k] ?? NaN));
      const cell = (n: string, k: Key): string => {
        const xs = get(n).map((s) => s[k] ?? NaN);
        const f = k === 'value' ? fmt : fmtC;
        return `${f(median(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
      };
      const rows: Array<[Key, string]> = [['value', unit], ['cpu', cpuUnit]];
      if (w === 'rand read qd1') rows.push(['p50', 'latency p50 us'], ['p99', 'latency p99 us']);
      for (const [k, u] of rows) {
        const ratios = pairs.map(([a, b]) => (med(a, k) / med(b, k)).toFixed(2));
        console.log(`| ${w} ${u} | ${servers.map((x) => cell(x.name, k)).join(' | ')} | ${ratios.join(' | ')} |`);
      }
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

// --- Floods -------------------------------------------------------------------

interface Flood {
  name: string;
  run(target: FloodTarget, probe: ProcessProbe): Promise<string>;
}

const FLOODS: Flood[] = [
  {
    name: 'block status x20000, replies read',
    run: async (t, p) => `${(await blockStatusFlood(t, { count: 20_000, read: true, hold: () => p.settle() })).replies} replies`,
  },
  {
    name: 'block status x100000, replies not read',
    run: async (t, p) => `${(await blockStatusFlood(t, { count: 100_000, read: false, hold: () => p.settle() })).sent} sent`,
  },
  {
    name: '40 reads of 32 MiB in one write',
    run: async (t, p) => `${(await readFlood(t, { count: 40, length: 32 * 2 ** 20, hold: () => p.settle() })).replies} replies`,
  },
  {
    name: '3000 reads of 1 MiB in one write',
    run: async (t, p) => `${(await readFlood(t, { count: 3000, length: 2 ** 20, hold: () => p.settle() })).replies} replies`,
  },
  {
    name: '500 cache requests of 64 MiB in one write',
    run: async (t, p) => {
      const before = p.bytesRead();
      // Prefetching may go on after the replies.
      await cacheFlood(t, { count: 500, length: 64 * 2 ** 20, hold: () => new Promise((r) => setTimeout(r, 2000)) });
      return `${((p.bytesRead() - before) / 1e9).toFixed(2)} GB read`;
    },
  },
  {
    name: '300 adjacent trims of 64 KiB in one write',
    run: async (t, p) => {
      const flood = trimFlood(t, { count: 300, length: 65536 });
      const children = await maxChildren(p, flood);
      const r = await flood;
      return `at most ${children} child processes${r.note ? `, ${r.note}` : ''}`;
    },
  },
  {
    name: '9M zero-length reads, replies not read',
    run: async (t, p) => {
      const r = await zeroReadFlood(t, { count: 9_000_000, hold: () => p.settle() });
      return `${(r.sent / 1e6).toFixed(2)}M sent${r.note ? `, ${r.note}` : ''}`;
    },
  },
  {
    name: '1M NBD_OPT_INFO, replies not read',
    run: async (t, p) => {
      const r = await optionInfoFlood(t, { count: 1_000_000, hold: () => p.settle() });
      return `${(r.sent / 1e6).toFixed(2)}M sent${r.note ? `, ${r.note}` : ''}`;
    },
  },
];

const signed = (x: number): string => `${x < 0 ? '-' : '+'}${Math.abs(x).toFixed(1)}`;

async function floodsMain(): Promise<void> {
  const wanted = values.flood ? values.flood.split(',').map((f) => f.trim()) : undefined;
  const floods = wanted ? FLOODS.filter((f) => wanted.some((w) => f.name.includes(w))) : FLOODS;
  if (floods.length === 0) throw new Error(`--flood: no flood matches ${values.flood}`);
  const dir = mkdtempSync(join(tmpdir(), 'stf2-floods-'));
  const kinds: Array<{ name: string; start: (file: string) => Promise<Server> }> = [{ name: 'ours', start: (f) => startOurs(f) }];
  for (const [name, bundle] of BASELINES) kinds.push({ name, start: (f) => startOurs(f, bundle, name) });
  const nbdkitLog = { text: '' };
  if (PEERS.includes('nbdkit')) kinds.push({ name: 'nbdkit', start: (f) => startNbdkit(f, nbdkitLog) });
  const rows: string[] = [];
  try {
    const src = join(dir, 'src.img');
    makeExtentImage(src, 128, 4096);
    for (const flood of floods) {
      const cells: string[] = [];
      for (const kind of kinds) {
        const file = join(dir, `${kind.name}.img`);
        execFileSync('cp', ['--sparse=always', src, file]);
        const server = await kind.start(file);
        const probe = new ProcessProbe(server.pid());
        try {
          const port = Number(/:(\d+)\//.exec(server.uri)![1]);
          const exportName = kind.name === 'nbdkit' ? '' : 'bench';
          // A first connection so that lazily loaded code is in before the peak is reset.
          await blockStatusFlood({ port, exportName }, { count: 1, read: true });
          await new Promise((r) => setTimeout(r, 200));
          const rss0 = probe.rss();
          probe.resetPeak();
          const t0 = Date.now();
          let what: string;
          try {
            what = await flood.run({ port, exportName }, probe);
          } catch (err) {
            what = `failed: ${err instanceof Error ? err.message : String(err)}`;
          }
          const died = server.proc && (server.proc.exitCode !== null || server.proc.signalCode !== null);
          const secs = ((Date.now() - t0) / 1000).toFixed(1);
          const line = died
            ? `died (${server.proc!.signalCode ?? `exit ${server.proc!.exitCode}`}); ${what}; ${secs} s`
            : `${(probe.peakRss() / 1e6).toFixed(1)} MB (${signed((probe.peakRss() - rss0) / 1e6)}); ${what}; ${secs} s`;
          console.log(`${flood.name.padEnd(44)} ${kind.name.padEnd(7)} peak RSS ${line}`);
          if (died && kind.name === 'nbdkit') console.log(`  nbdkit's last words: ${nbdkitLog.text.trim().split('\n').slice(-2).join(' / ')}`);
          cells.push(line);
        } finally {
          server.stop();
          await new Promise((r) => setTimeout(r, 300));
        }
      }
      rows.push(`| ${flood.name} | ${cells.join(' | ')} |`);
    }
    console.log(`\n## peak RSS during each flood, MB = 10^6 bytes (growth over the RSS before it); what the client saw; duration\n`);
    console.log(`| flood | ${kinds.map((k) => k.name).join(' | ')} |`);
    console.log(`| --- | ${kinds.map(() => '---').join(' | ')} |`);
    for (const r of rows) console.log(r);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

(values.floods ? floodsMain() : main()).catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
