// stiefelOS's self-test (stiefel.role=selftest): is everything the roles
// drive present and working in this image on this machine? It talks to the
// system through SelftestSystem so the logic runs in unit tests too.
import { formatCheck, formatVerdict, parseIfInet6, usableLinkLocal, type CheckResult } from './checks';

export interface RunResult {
  /** Exit code, or null when the program could not be started or was killed. */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Why it did not run (ENOENT, a timeout), when it did not. */
  error?: string;
}

export interface SelftestSystem {
  run(file: string, args: readonly string[], timeoutMs: number): Promise<RunResult>;
  readFile(path: string): Promise<string>;
  readdir(path: string): Promise<string[]>;
  exists(path: string): Promise<boolean>;
  sleep(ms: number): Promise<void>;
  now(): number;
}

export interface SelftestOptions {
  nodeVersion: string;
  nodePath: string;
  /** How long to wait for a NIC and its link-local address. */
  nicTimeoutMs: number;
  /** Per-program timeout. */
  programTimeoutMs?: number;
}

/** Programs the roles drive, and how to ask each for its version (exit 0 means it loaded its libraries). */
export const PROGRAM_CHECKS: ReadonlyArray<{ name: string; args: string[] }> = [
  { name: 'kexec', args: ['--version'] },
  { name: 'ip', args: ['-V'] },
  { name: 'wg', args: ['--version'] },
  { name: 'cryptsetup', args: ['--version'] },
  { name: 'lvm', args: ['version'] },
  { name: 'blkid', args: ['-V'] },
  { name: 'mount', args: ['-V'] },
  { name: 'umount', args: ['-V'] },
  { name: 'losetup', args: ['-V'] },
  { name: 'modprobe', args: ['--version'] },
  { name: 'busybox', args: ['true'] },
];

const firstLine = (s: string): string => s.trim().split('\n')[0] ?? '';

function describeFailure(r: RunResult): string {
  if (r.error !== undefined) return r.error;
  return `exit ${r.code}: ${firstLine(r.stderr) || firstLine(r.stdout) || 'no output'}`;
}

async function checkProgram(sys: SelftestSystem, name: string, args: string[], timeoutMs: number): Promise<CheckResult> {
  const r = await sys.run(name, args, timeoutMs);
  if (r.code === 0) return { name, ok: true, detail: firstLine(r.stdout) || firstLine(r.stderr) || 'runs' };
  return { name, ok: false, detail: describeFailure(r) };
}

async function checkModule(sys: SelftestSystem, name: string, timeoutMs: number): Promise<CheckResult> {
  const r = await sys.run('modprobe', [name], timeoutMs);
  if (r.code !== 0) return { name: `module ${name}`, ok: false, detail: `modprobe ${name}: ${describeFailure(r)}` };
  if (!(await sys.exists(`/sys/module/${name}`))) {
    return { name: `module ${name}`, ok: false, detail: `modprobe ${name} succeeded but /sys/module/${name} does not exist` };
  }
  // Use what was loaded: an NBD device exists, a WireGuard interface can be made.
  if (name === 'nbd') {
    const ok = await sys.exists('/sys/block/nbd0');
    return { name: 'module nbd', ok, detail: ok ? 'loaded, /sys/block/nbd0 exists' : 'loaded, but /sys/block/nbd0 does not exist' };
  }
  if (name === 'wireguard') {
    const add = await sys.run('ip', ['link', 'add', 'stf-selftest', 'type', 'wireguard'], timeoutMs);
    if (add.code !== 0) return { name: 'module wireguard', ok: false, detail: `loaded, but ip link add type wireguard: ${describeFailure(add)}` };
    await sys.run('ip', ['link', 'del', 'stf-selftest'], timeoutMs);
    return { name: 'module wireguard', ok: true, detail: 'loaded, a wireguard interface can be created' };
  }
  return { name: `module ${name}`, ok: true, detail: 'loaded' };
}

/** Physical network interfaces: those with a device behind them in sysfs. */
async function physicalNics(sys: SelftestSystem): Promise<string[]> {
  const out: string[] = [];
  for (const n of (await sys.readdir('/sys/class/net')).sort()) {
    if (n !== 'lo' && (await sys.exists(`/sys/class/net/${n}/device`))) out.push(n);
  }
  return out;
}

async function checkNic(sys: SelftestSystem, timeoutMs: number, programTimeoutMs: number): Promise<CheckResult> {
  const deadline = sys.now() + timeoutMs;
  let nics: string[] = [];
  const up = new Set<string>();
  while (sys.now() < deadline) {
    nics = await physicalNics(sys);
    for (const n of nics) {
      if (up.has(n)) continue;
      const r = await sys.run('ip', ['link', 'set', 'dev', n, 'up'], programTimeoutMs);
      if (r.code === 0) up.add(n);
    }
    const ll = usableLinkLocal(parseIfInet6(await sys.readFile('/proc/net/if_inet6').catch(() => ''))).filter((a) =>
      up.has(a.ifname),
    );
    if (ll.length > 0) {
      return { name: 'nic', ok: true, detail: ll.map((a) => `${a.ifname} ${a.address}`).join(', ') };
    }
    await sys.sleep(200);
  }
  const seconds = Math.round(timeoutMs / 1000);
  if (nics.length === 0) return { name: 'nic', ok: false, detail: `no network interface appeared within ${seconds} s (driver missing?)` };
  return { name: 'nic', ok: false, detail: `${nics.join(', ')} got no IPv6 link-local address within ${seconds} s` };
}

/** Runs every check, prints one line each and the verdict; resolves to whether all passed. */
export async function runSelftest(sys: SelftestSystem, options: SelftestOptions, print: (line: string) => void): Promise<boolean> {
  const programTimeout = options.programTimeoutMs ?? 15_000;
  const results: CheckResult[] = [];
  const record = (r: CheckResult): void => {
    results.push(r);
    print(formatCheck(r));
  };
  record({ name: 'node', ok: true, detail: `${options.nodeVersion} runs stiefelctl (${options.nodePath})` });
  for (const p of PROGRAM_CHECKS) record(await checkProgram(sys, p.name, p.args, programTimeout));
  for (const m of ['nbd', 'wireguard']) record(await checkModule(sys, m, programTimeout));
  record(await checkNic(sys, options.nicTimeoutMs, programTimeout));
  const uptime = (await sys.readFile('/proc/uptime').catch(() => '')).split(' ')[0];
  if (uptime) print(`selftest: uptime ${uptime} s`);
  print(formatVerdict(results));
  return results.every((r) => r.ok);
}
