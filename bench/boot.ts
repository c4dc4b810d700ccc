// npm run bench:boot — discovery and payload transfer over a veth pair
// between two network namespaces (root), with the real bundled CLI.
//
//  1. time from `stiefelctl client` start to the payload verified, for a
//     100 MB payload (the real Debian kernel + a generated initrd), and the
//     payload throughput, with the server already running;
//  2. discovery latency: the client runs first, the server starts later; the
//     time from the server's "serving" line to the client's "found" line;
//  3. peers in the same run: OpenSSL's own s_server/s_client with the same
//     TLS 1.2 suite and PSK piped into sha256sum (the C floor for "receive
//     over TLS and verify"), and sha256sum of the file alone (the CPU floor
//     for verification on this machine).
//
// Options: --runs N (default 7), --size MB (default 100), --json, --emulate
// (bench/emulate.ts: the server and the OpenSSL s_server under qemu-user on
// CPU 0, the client, s_client and the digests under qemu-user on CPU 1: two
// one-CPU emulated machines, as the VM tests' laptop and desktop)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deriveSubKeys } from '../src/crypto/keys';
import { PAYLOAD_CIPHER, PSK_IDENTITY } from '../src/payload/tls';
import { cliPath } from '../test/helpers/cli';
import { emulated, emulatedWords } from './emulate';
import { NetnsLab, type LabProcess } from '../test/helpers/netns';
import { writeKernelFile, writePayloadFile } from '../test/net/fixtures/payload-files';
import { watchPeakRss, writeConfig, writeSecret } from '../test/net/fixtures/world';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '7' }, size: { type: 'string', default: '100' }, json: { type: 'boolean' }, emulate: { type: 'boolean', default: false }, 'no-big': { type: 'boolean' } },
});
const RUNS = Number(values.runs);
const EMULATE = values.emulate;
const onServer = (file: string, args: string[]): [string, string[]] => emulated(EMULATE, 0, file, args);
const onClient = (file: string, args: string[]): [string, string[]] => emulated(EMULATE, 1, file, args);
const TOTAL = Number(values.size) * 1_000_000;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (xs: number[], unit: string, digits = 3): string =>
  `median ${median(xs).toFixed(digits)} ${unit} (min ${Math.min(...xs).toFixed(digits)}, max ${Math.max(...xs).toFixed(digits)}, n=${xs.length})`;

/** Resolves with the time (performance.now()) at which `p` first printed `pattern`. */
function when(p: LabProcess, pattern: RegExp, timeoutMs = 60_000): Promise<number> {
  return p.waitFor(pattern, timeoutMs).then(() => performance.now());
}

async function main(): Promise<void> {
  const cli = cliPath();
  const lab = await NetnsLab.create('stf3');
  const dir = mkdtempSync(join(tmpdir(), 'stf3-bench-'));
  const result: Record<string, unknown> = {};
  try {
    const c = await lab.namespace('bcli');
    const s = await lab.namespace('bsrv');
    await lab.veth({ ns: c, name: 'stf3bc0' }, { ns: s, name: 'stf3bs0' });
    const kernel = join(dir, 'vmlinuz');
    const initrd = join(dir, 'initrd.img');
    writeKernelFile(kernel);
    const kernelSize = Number(execFileSync('stat', ['-c', '%s', kernel], { encoding: 'utf8' }));
    writePayloadFile(initrd, TOTAL - kernelSize);
    const secret = writeSecret(join(dir, 'secret'));
    writeConfig(join(dir, 'server.yaml'), { secret: 'secret', kernel, initrd });
    writeConfig(join(dir, 'client.yaml'), { secret: 'secret', timeoutS: 30 });
    const runClient = (i: number): LabProcess =>
      lab.spawn(c, ...onClient(process.execPath, [cli, 'client', '--config', join(dir, 'client.yaml'), '--no-kexec', '--out', join(dir, `out-${i}`)]), { label: 'client' });

    // 1. Server running; client start -> payload verified.
    const server = lab.spawn(s, ...onServer(process.execPath, [cli, 'server', '--config', join(dir, 'server.yaml')]), { label: 'server' });
    await server.waitFor(/boot payload ready/);
    const wall: number[] = [];
    const inside: number[] = [];
    const rates: number[] = [];
    for (let i = 0; i < RUNS + 1; i++) {
      const t0 = performance.now();
      const p = runClient(i);
      const verified = await when(p, /payload verified/);
      const r = await p.wait();
      if (r.code !== 0) throw new Error(`client failed:\n${p.output}`);
      const m = /payload verified: ([\d.]+) MB in ([\d.]+) s \((\d+) MB\/s\), ([\d.]+) s after start/.exec(p.stderr)!;
      rmSync(join(dir, `out-${i}`), { recursive: true, force: true });
      if (i === 0) continue; // warm-up: page cache, first-run JIT
      wall.push((verified - t0) / 1000);
      inside.push(Number(m[4]));
      rates.push(Number(m[1]) / Number(m[2]));
    }
    await server.stop();
    result.payloadMB = TOTAL / 1e6;
    result.clientStartToVerifiedS = median(wall);
    result.clientStartToVerifiedInsideS = median(inside);
    result.throughputMBps = median(rates);
    console.log(`payload ${TOTAL / 1e6} MB (kernel ${kernelSize} bytes + generated initrd), ${RUNS} runs after one warm-up`);
    console.log(`  client start -> payload verified (process spawn included): ${fmt(wall, 's')}`);
    console.log(`  the same, measured inside the client (after Node started):   ${fmt(inside, 's')}`);
    console.log(`  payload throughput (manifest to verified):                  ${fmt(rates, 'MB/s', 0)}`);

    // 2. Discovery latency with the server coming up after the client.
    const found: number[] = [];
    for (let i = 0; i < Math.min(RUNS, 5); i++) {
      const p = runClient(100 + i);
      await p.waitFor(/looking for the laptop/);
      await new Promise((r) => setTimeout(r, 300));
      const srv = lab.spawn(s, ...onServer(process.execPath, [cli, 'server', '--config', join(dir, 'server.yaml')]), { label: 'server' });
      const up = await when(srv, /serving '/);
      const seen = await when(p, /found the laptop/);
      found.push(seen - up);
      await p.wait();
      await srv.stop();
      rmSync(join(dir, `out-${100 + i}`), { recursive: true, force: true });
    }
    result.discoveryAfterServerUpMs = median(found);
    console.log(`  server up -> client found it (retry interval 50 ms):      ${fmt(found, 'ms', 0)}`);

    // 3. Peers: OpenSSL's tools, same suite and PSK, and sha256sum alone.
    const psk = deriveSubKeys(secret).payloadPsk.toString('hex');
    const opensslS: number[] = [];
    const ossl = emulatedWords(EMULATE, 1, 'openssl').join(' ');
    const ll = await lab.linkLocal(s, 'stf3bs0');
    for (let i = 0; i < RUNS; i++) {
      const srv = lab.spawn(s, ...onServer('openssl', ['s_server', '-accept', '[::]:4700', '-nocert', '-tls1_2', '-psk', psk, '-psk_identity', PSK_IDENTITY, '-cipher', PAYLOAD_CIPHER, '-WWW', '-naccept', '1', '-quiet']), { cwd: dir, label: 'openssl s_server' });
      await new Promise((r) => setTimeout(r, 300));
      const t0 = performance.now();
      const sh = `printf 'GET /initrd.img HTTP/1.0\\r\\n\\r\\n' | ${ossl} s_client -connect '[${ll}%stf3bc0]:4700' -tls1_2 -psk ${psk} -psk_identity ${PSK_IDENTITY} -cipher ${PAYLOAD_CIPHER} -quiet -ign_eof 2>/dev/null | ${ossl} dgst -sha256`;
      await lab.exec(c, 'sh', ['-c', sh], { timeoutMs: 60_000 });
      opensslS.push((performance.now() - t0) / 1000);
      await srv.stop();
    }
    const initrdMB = (TOTAL - kernelSize) / 1e6;
    const opensslRates = opensslS.map((x) => initrdMB / x);
    const shaRates: number[] = [];
    const dgstRates: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      let t0 = performance.now();
      execFileSync(...onClient('sha256sum', [initrd]));
      shaRates.push(initrdMB / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      execFileSync(...onClient('openssl', ['dgst', '-sha256', initrd]));
      dgstRates.push(initrdMB / ((performance.now() - t0) / 1000));
    }
    result.peerOpensslMBps = median(opensslRates);
    result.peerSha256sumMBps = median(shaRates);
    result.peerOpensslDgstMBps = median(dgstRates);
    console.log(`peers, same run (the initrd only, ${initrdMB.toFixed(1)} MB):`);
    console.log(`  openssl s_server -> s_client | openssl dgst -sha256, ${PAYLOAD_CIPHER}: ${fmt(opensslRates, 'MB/s', 0)}`);
    console.log(`  openssl dgst -sha256 of the file (page cache), no network:  ${fmt(dgstRates, 'MB/s', 0)}`);
    console.log(`  sha256sum of the file (page cache), no network:             ${fmt(shaRates, 'MB/s', 0)}`);
    console.log(
      `ratios: stiefelctl / openssl tools ${(median(rates) / median(opensslRates)).toFixed(2)}, ` +
        `stiefelctl / openssl dgst ${(median(rates) / median(dgstRates)).toFixed(2)}, stiefelctl / sha256sum ${(median(rates) / median(shaRates)).toFixed(2)}`,
    );

    // 4. Memory with a 1 GiB initrd.
    if (!values['no-big']) {
      const big = join(dir, 'initrd-big.img');
      writePayloadFile(big, 1024 ** 3);
      writeConfig(join(dir, 'server-big.yaml'), { secret: 'secret', kernel, initrd: big });
      const srv = lab.spawn(s, ...onServer(process.execPath, [cli, 'server', '--config', join(dir, 'server-big.yaml')]), { label: 'server' });
      const srvRss = watchPeakRss(srv);
      await srv.waitFor(/boot payload ready/, 120_000);
      const p = runClient(999);
      const cliRss = watchPeakRss(p);
      const r = await p.wait(300_000);
      if (r.code !== 0) throw new Error(`client failed:\n${p.output}`);
      const m = /payload verified: ([\d.]+) MB in ([\d.]+) s \((\d+) MB\/s\)/.exec(p.stderr)!;
      const clientKb = cliRss.peakKb();
      const serverKb = srvRss.peakKb();
      cliRss.stop();
      srvRss.stop();
      await srv.stop();
      rmSync(join(dir, 'out-999'), { recursive: true, force: true });
      rmSync(big, { force: true });
      result.bigPeakRssKb = { client: clientKb, server: serverKb };
      console.log(`1 GiB initrd: ${m[1]} MB in ${m[2]} s (${m[3]} MB/s); peak RSS client ${(clientKb / 1024).toFixed(0)} MiB, server ${(serverKb / 1024).toFixed(0)} MiB`);
    }
    console.log(`load average at the end: ${execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).trim()}`);
    if (values.json) console.log(JSON.stringify(result));
  } finally {
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exitCode = 1;
});
