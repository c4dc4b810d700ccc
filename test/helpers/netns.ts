// Network namespaces for tests: create namespaces and veth pairs, run
// processes inside them, and always clean up (processes killed by process
// group, namespaces deleted, which deletes their interfaces too).
//
//   const lab = await NetnsLab.create('stf3');          // your unique prefix
//   t.after(() => lab.cleanup());
//   const a = await lab.namespace('client');              // stf3-client-1a2b
//   const b = await lab.namespace('server');
//   await lab.veth({ ns: a, name: 'stf3c0' }, { ns: b, name: 'stf3s0', up: true });
//   const p = lab.spawn(b, process.execPath, [CLI, 'server', ...]);
//   await p.waitFor(/serving/);
//
// Needs root (requireRoot() from tools.ts) and iproute2. Interface names are
// at most 15 characters; namespace names are `${prefix}-${label}-${random}`.
// NetnsLab.create() first deletes namespaces left over from a crashed run
// with the same prefix, so pick a prefix no one else uses.
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { requireRoot, requireTool } from './tools';

export interface Namespace {
  readonly name: string;
}

export interface VethEnd {
  ns: Namespace;
  /** Interface name, at most 15 characters. */
  name: string;
  /** Bring the link up (default false: leave it down for the code under test). */
  up?: boolean;
  mac?: string;
  /** Addresses with prefix, e.g. 10.0.0.1/24 or fd00::1/64. */
  addresses?: string[];
  /** Disable IPv6 duplicate address detection (default true: link-local usable at once). */
  noDad?: boolean;
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function exec(file: string, args: string[], options: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: options.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? ((err as NodeJS.ErrnoException & { code?: unknown }).code as number | undefined) ?? 1 : 0;
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return reject(err);
      resolve({ code: typeof code === 'number' ? code : 1, stdout: String(stdout), stderr: String(stderr) });
    });
    if (options.input !== undefined) {
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(options.input);
    }
  });
}

async function must(file: string, args: string[]): Promise<string> {
  const r = await exec(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** A process started in a namespace, with its output collected. */
export class LabProcess {
  readonly child: ChildProcess;
  readonly label: string;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #listeners: Array<() => void> = [];

  constructor(child: ChildProcess, label: string) {
    this.child = child;
    this.label = label;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      this.stdout += d;
      this.#notify();
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
      this.#notify();
    });
    this.exited = new Promise((resolve) => {
      child.on('close', (code, signal) => {
        this.#exitInfo = { code, signal };
        this.#notify();
        resolve({ code, signal });
      });
      child.on('error', () => {
        this.#exitInfo ??= { code: null, signal: null };
        this.#notify();
        resolve(this.#exitInfo);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.#exitInfo === undefined;
  }

  get output(): string {
    return this.stdout + this.stderr;
  }

  #notify(): void {
    for (const l of this.#listeners) l();
  }

  /** Resolves with the match once stdout or stderr matches; rejects on exit or timeout. */
  waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = this.stderr.match(pattern) ?? this.stdout.match(pattern);
        if (m) {
          done();
          resolve(m);
          return true;
        }
        if (this.#exitInfo) {
          done();
          reject(new Error(`${this.label} exited (${JSON.stringify(this.#exitInfo)}) before printing ${pattern}:\n${this.output.slice(-3000)}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.label} did not print ${pattern} within ${timeoutMs} ms:\n${this.output.slice(-3000)}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#listeners = this.#listeners.filter((l) => l !== listener);
      };
      const listener = (): void => void check();
      if (!check()) this.#listeners.push(listener);
    });
  }

  /** Waits for exit (killing after timeoutMs). */
  async wait(timeoutMs = 60_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Signals the whole process group (the process and anything it started). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.running || this.child.pid === undefined) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      try {
        this.child.kill(signal);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL after graceMs. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.running) return;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export class NetnsLab {
  readonly prefix: string;
  readonly #namespaces: Namespace[] = [];
  readonly #processes: LabProcess[] = [];

  private constructor(prefix: string) {
    this.prefix = prefix;
  }

  /** Checks root and iproute2, removes leftovers of earlier runs with this prefix. */
  static async create(prefix: string): Promise<NetnsLab> {
    requireRoot();
    requireTool('ip');
    if (!/^[a-z0-9]{2,8}$/.test(prefix)) throw new Error(`netns prefix '${prefix}' must be 2 to 8 lower-case letters or digits`);
    await NetnsLab.cleanupStale(prefix);
    return new NetnsLab(prefix);
  }

  /** Deletes every namespace named `${prefix}-...` (left by a crashed run). */
  static async cleanupStale(prefix: string): Promise<void> {
    const list = await exec('ip', ['netns', 'list']);
    for (const line of list.stdout.split('\n')) {
      const name = line.split(' ')[0];
      if (name && name.startsWith(`${prefix}-`)) {
        await killNamespaceProcesses(name);
        await exec('ip', ['netns', 'delete', name]);
      }
    }
  }

  /** A new namespace with lo up. */
  async namespace(label: string): Promise<Namespace> {
    const name = `${this.prefix}-${label}-${randomBytes(2).toString('hex')}`;
    await must('ip', ['netns', 'add', name]);
    const ns = { name };
    this.#namespaces.push(ns);
    await must('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A veth pair between two namespaces (or two ends in one). */
  async veth(a: VethEnd, b: VethEnd): Promise<void> {
    for (const end of [a, b]) {
      if (end.name.length > 15) throw new Error(`interface name ${end.name} is longer than 15 characters`);
    }
    await must('ip', ['link', 'add', a.name, 'netns', a.ns.name, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.ns.name]);
    for (const end of [a, b]) await this.configure(end);
  }

  /** Sets MAC, DAD, addresses and link state of an existing interface. */
  async configure(end: VethEnd): Promise<void> {
    const n = end.ns.name;
    if (end.mac) await must('ip', ['-n', n, 'link', 'set', 'dev', end.name, 'address', end.mac]);
    if (end.noDad ?? true) {
      await exec('ip', ['netns', 'exec', n, 'sysctl', '-q', '-w', `net.ipv6.conf.${end.name}.accept_dad=0`]);
    }
    for (const addr of end.addresses ?? []) await must('ip', ['-n', n, 'addr', 'add', addr, 'dev', end.name]);
    if (end.up) await must('ip', ['-n', n, 'link', 'set', 'dev', end.name, 'up']);
  }

  /** Runs `ip -n NS ARGS...` and returns stdout. */
  ip(ns: Namespace, args: string[]): Promise<string> {
    return must('ip', ['-n', ns.name, ...args]);
  }

  /** Runs a command inside the namespace to completion. */
  exec(ns: Namespace, file: string, args: string[], options: { timeoutMs?: number; input?: string } = {}): Promise<ExecResult> {
    return exec('ip', ['netns', 'exec', ns.name, file, ...args], options);
  }

  /** The interface's link-local IPv6 address (without zone), waiting until it exists. */
  async linkLocal(ns: Namespace, ifname: string, timeoutMs = 5000): Promise<string> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const out = await must('ip', ['-n', ns.name, '-6', '-o', 'addr', 'show', 'dev', ifname, 'scope', 'link']);
      const m = /inet6 (fe80::[0-9a-f:]+)\/64 scope link(?! tentative)/.exec(out);
      if (m) return m[1]!;
      if (Date.now() > until) throw new Error(`${ifname} in ${ns.name} has no usable link-local address: ${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async mac(ns: Namespace, ifname: string): Promise<string> {
    const out = await must('ip', ['-n', ns.name, '-o', 'link', 'show', 'dev', ifname]);
    const m = /link\/ether ([0-9a-f:]{17})/.exec(out);
    if (!m) throw new Error(`no MAC for ${ifname}: ${out}`);
    return m[1]!;
  }

  /** Starts a long-running process inside the namespace, in its own process group. */
  spawn(ns: Namespace, file: string, args: string[], options: SpawnOptions & { label?: string } = {}): LabProcess {
    const child = spawn('ip', ['netns', 'exec', ns.name, file, ...args], {
      ...options,
      detached: true,
      stdio: options.stdio ?? ['pipe', 'pipe', 'pipe'],
    });
    const p = new LabProcess(child, options.label ?? `${file} in ${ns.name}`);
    this.#processes.push(p);
    return p;
  }

  /** Kills every process started here, then deletes the namespaces. Safe to call twice. */
  async cleanup(): Promise<void> {
    await Promise.all(this.#processes.splice(0).map((p) => p.stop(2000)));
    for (const ns of this.#namespaces.splice(0)) {
      await killNamespaceProcesses(ns.name);
      await exec('ip', ['netns', 'delete', ns.name]);
    }
  }
}

/** Kills whatever still runs in a namespace (ip netns pids). */
async function killNamespaceProcesses(name: string): Promise<void> {
  const r = await exec('ip', ['netns', 'pids', name]);
  for (const pid of r.stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}
