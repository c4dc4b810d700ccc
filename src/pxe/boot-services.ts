// The PXE boot services of the server role: one dnsmasq per link, started
// when the link comes up. Each link is probed first: when another DHCP server
// answers there, the laptop takes the address it offered and dnsmasq answers
// only as ProxyDHCP (the boot file, never an address); otherwise the laptop
// puts A.B.N.1/24 on the link and dnsmasq leases A.B.N.2-9 to PXE clients.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, chown, copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Config } from '../config/schema';
import { runChecked, systemRunner, type CommandRunner } from '../disk/runner';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { bootScriptUrl, checkInterfaceName, dnsmasqConf, linkAddressing, TFTP_BOOT_FILES, type PxeMode } from './dnsmasq-conf';

export interface PxeLink {
  readonly interface: string;
  readonly mode: PxeMode;
  /** The laptop's IPv4 address on the link. */
  readonly address: string;
  readonly prefixLength: number;
  /** What iPXE clients on this link are told to fetch. */
  readonly bootUrl: string;
}

export interface PxeServices {
  /** False when PXE is switched off or cannot run here (said once in the log). */
  readonly enabled: boolean;
  /** Probes the link and starts its boot services; undefined when PXE is off or the link could not be served (warned). */
  addLink(name: string): Promise<PxeLink | undefined>;
  /** Stops the link's services and removes the address they added (an interface that went away). */
  removeLink(name: string): Promise<void>;
  links(): PxeLink[];
  close(): Promise<void>;
}

export interface PxeServicesOptions {
  pxe: Pick<Config['server']['pxe'], 'enabled' | 'ipxeDir' | 'httpPort' | 'subnet'>;
  /** Configuration, leases, the TFTP root and the probe script go here (a tmpfs in stiefelOS). */
  runDir: string;
  /** Runs ip, busybox udhcpc and `dnsmasq --version`. */
  runner?: CommandRunner;
  dnsmasq?: string;
  busybox?: string;
  ip?: string;
  /** The unprivileged user dnsmasq changes to; it owns the TFTP files. */
  user?: string;
  passwdFile?: string;
  /**
   * DHCPDISCOVERs of the probe, one second apart. A server that pings an
   * address before offering it (dnsmasq does, as many home routers run it)
   * answers a new client only after about 4 s.
   */
  probeTries?: number;
  /** How often a dnsmasq that exits is started again before its link goes without PXE. */
  maxRestarts?: number;
  restartDelayMs?: number;
}

const DEFAULTS = { dnsmasq: 'dnsmasq', busybox: 'busybox', ip: 'ip', user: 'nobody', passwdFile: '/etc/passwd', probeTries: 6, maxRestarts: 3, restartDelayMs: 1000 };

/** The probe's vendor class: not PXEClient, so PXE-only servers (another laptop's) stay silent. */
const PROBE_VENDOR_CLASS = 'stiefelsystem-probe';
const STDERR_LINES_KEPT = 12;
const START_TIMEOUT_MS = 5000;
const STOP_GRACE_MS = 2000;

/** The udhcpc script: reports what happened and configures nothing. */
const PROBE_SCRIPT = '#!/bin/sh\necho "stiefel-probe $1 ip=$ip mask=$mask serverid=$serverid lease=$lease"\n';

export interface ProbeResult {
  /** Some DHCP server offered an address. */
  answered: boolean;
  /** The lease it gave (the probe is a full DISCOVER-REQUEST-ACK). */
  lease?: { address: string; prefixLength: number; server: string; seconds: number };
}

/** Reads what udhcpc and PROBE_SCRIPT printed. */
export function parseProbeOutput(stdout: string, stderr: string): ProbeResult {
  const bound = /^stiefel-probe (?:bound|renew) ip=(\S+) mask=(\d+) serverid=(\S*) lease=(\d*)$/m.exec(stdout);
  if (bound) {
    return { answered: true, lease: { address: bound[1]!, prefixLength: Number(bound[2]), server: bound[3]!, seconds: Number(bound[4] || 0) } };
  }
  return { answered: /sending select for|broadcasting select for|received offer/i.test(stderr) };
}

interface Passwd {
  uid: number;
  gid: number;
}

async function lookupUser(file: string, user: string): Promise<Passwd> {
  const text = await readFile(file, 'utf8').catch((err: Error) => {
    throw new StiefelError('E_PXE_USER', `cannot read ${file} to find user '${user}' for dnsmasq: ${err.message}`, { cause: err });
  });
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === user && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new StiefelError('E_PXE_USER', `user '${user}' for dnsmasq is not in ${file}: add it (stiefelOS has nobody)`);
}

/** One link's dnsmasq: started, watched, restarted a few times, stopped. */
class DnsmasqSupervisor {
  #child: ChildProcess | undefined;
  #stopping = false;
  #restarts = 0;
  #lastLines: string[] = [];
  #restartTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly program: string,
    private readonly confFile: string,
    private readonly name: string,
    private readonly limits: { maxRestarts: number; restartDelayMs: number },
    private readonly log: Logger,
  ) {}

  /** Resolves once dnsmasq said it serves TFTP (its last start-up line); rejects when it exits first. */
  start(): Promise<void> {
    this.#lastLines = [];
    const child = spawn(this.program, [`--conf-file=${this.confFile}`, '--keep-in-foreground'], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.#child = child;
    return new Promise((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => {
        if (!ready) fail(new StiefelError('E_PXE_DNSMASQ', `dnsmasq on ${this.name} did not start within ${START_TIMEOUT_MS / 1000} s: ${this.#tail()}`));
      }, START_TIMEOUT_MS);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        ready = true;
        this.#kill(child, 'SIGKILL');
        reject(err);
      };
      let partial = '';
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop()!;
        for (const line of lines) {
          this.#line(line);
          if (!ready && /TFTP root is /.test(line)) {
            ready = true;
            clearTimeout(timer);
            resolve();
          }
        }
      });
      child.on('error', (err: NodeJS.ErrnoException) => fail(new StiefelError('E_PXE_DNSMASQ', `cannot run ${this.program}: ${err.message}`, { cause: err })));
      child.on('close', (code, signal) => {
        if (this.#child === child) this.#child = undefined;
        if (!ready) {
          clearTimeout(timer);
          ready = true;
          reject(new StiefelError('E_PXE_DNSMASQ', `dnsmasq on ${this.name} exited at start (${signal ?? `code ${code}`}): ${this.#tail()}`));
          return;
        }
        if (!this.#stopping) this.#exitedWhileServing(signal ?? `code ${code}`);
      });
    });
  }

  #line(line: string): void {
    if (line === '') return;
    this.#lastLines.push(line);
    if (this.#lastLines.length > STDERR_LINES_KEPT) this.#lastLines.shift();
    // Leases and transfers are worth a line on the console; the rest is detail.
    if (/DHCPACK|PXE\(.*\) .*proxy|sent .* to /.test(line)) this.log.info(`${this.name}: ${line.replace(/^dnsmasq[-a-z]*\[\d+\]: /, '')}`);
    else this.log.debug(line);
  }

  #tail(): string {
    return this.#lastLines.slice(-4).join(' | ') || '(no output)';
  }

  #exitedWhileServing(how: string): void {
    if (this.#restarts >= this.limits.maxRestarts) {
      this.log.warn(`PXE on ${this.name} is off: dnsmasq exited (${how}) ${this.#restarts + 1} times; last lines: ${this.#tail()}`);
      return;
    }
    this.#restarts++;
    this.log.warn(`dnsmasq on ${this.name} exited (${how}); starting it again (${this.#restarts} of ${this.limits.maxRestarts}); last lines: ${this.#tail()}`);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#stopping) return;
      this.start().catch((err: Error) => {
        this.log.debug(err.message);
        if (!this.#stopping) this.#exitedWhileServing('at start');
      });
    }, this.limits.restartDelayMs);
  }

  #kill(child: ChildProcess, signal: NodeJS.Signals): void {
    try {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    } catch {
      /* already gone */
    }
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    this.#kill(child, 'SIGTERM');
    const timer = setTimeout(() => this.#kill(child, 'SIGKILL'), STOP_GRACE_MS);
    await closed;
    clearTimeout(timer);
  }
}

interface LinkState {
  link: PxeLink;
  n: number;
  dnsmasq: DnsmasqSupervisor;
  /** `ip addr` arguments of the address we put there, removed at the end. */
  addedAddress: string;
}

const disabled = (): PxeServices => ({
  enabled: false,
  addLink: async () => undefined,
  removeLink: async () => undefined,
  links: () => [],
  close: async () => undefined,
});

/** What must be there before any link is served; one line with the fix when something is not. */
async function checkPrerequisites(o: { runner: CommandRunner; dnsmasq: string; ipxeDir: string }): Promise<string | undefined> {
  const version = await o.runner.run(o.dnsmasq, ['--version']).catch(() => undefined);
  if (!version || version.code !== 0) return `${o.dnsmasq} is not installed: install 'dnsmasq-base' (Debian), 'dnsmasq' (Fedora, Arch)`;
  if (!/\bDHCP\b/.test(version.stdout) || !/\bTFTP\b/.test(version.stdout)) return `${o.dnsmasq} was built without DHCP or TFTP: install Debian's 'dnsmasq-base'`;
  for (const file of Object.values(TFTP_BOOT_FILES)) {
    const path = posix.join(o.ipxeDir, file);
    try {
      await access(path, constants.R_OK);
    } catch {
      return `${path} is missing: install 'ipxe' (Debian), or set server.pxe.ipxe_dir to where undionly.kpxe and ipxe.efi are`;
    }
  }
  return undefined;
}

export async function startPxeServices(options: PxeServicesOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<PxeServices> {
  const { log, signal } = ctx;
  if (!options.pxe.enabled) {
    log.debug('PXE boot services are off (server.pxe.enabled: false)');
    return disabled();
  }
  const o = { ...DEFAULTS, ...options, runner: options.runner ?? systemRunner };
  const problem = await checkPrerequisites({ runner: o.runner, dnsmasq: o.dnsmasq, ipxeDir: o.pxe.ipxeDir });
  if (problem !== undefined) {
    log.warn(`PXE boot services are off: ${problem}`);
    return disabled();
  }

  // One TFTP root holding copies of the two files, owned by dnsmasq's user
  // (tftp-secure serves only those) and nothing else.
  const owner = await lookupUser(o.passwdFile, o.user);
  const tftpRoot = posix.join(o.runDir, 'tftp');
  await rm(tftpRoot, { recursive: true, force: true });
  await mkdir(tftpRoot, { recursive: true, mode: 0o755 });
  await chmod(o.runDir, 0o755);
  for (const file of Object.values(TFTP_BOOT_FILES)) {
    const to = posix.join(tftpRoot, file);
    await copyFile(posix.join(o.pxe.ipxeDir, file), to);
    await chown(to, owner.uid, owner.gid);
    await chmod(to, 0o444);
  }
  const probeScript = posix.join(o.runDir, 'probe.sh');
  await writeFile(probeScript, PROBE_SCRIPT, { mode: 0o755 });

  const states = new Map<string, LinkState>();
  const pending = new Map<string, Promise<PxeLink | undefined>>();
  const usedNumbers = new Set<number>();
  let closed = false;

  const ip = (args: string[]): Promise<string> => runChecked(o.runner, 'E_PXE_IP', o.ip, args);

  async function probe(name: string): Promise<ProbeResult> {
    const started = Date.now();
    const r = await o.runner.run(o.busybox, ['udhcpc', '-i', name, '-f', '-q', '-n', '-t', String(o.probeTries), '-T', '1', '-A', '0', '-V', PROBE_VENDOR_CLASS, '-s', probeScript]);
    const result = parseProbeOutput(r.stdout, r.stderr);
    log.debug(`probe on ${name}: ${result.lease ? `lease ${result.lease.address}/${result.lease.prefixLength} from ${result.lease.server}` : result.answered ? 'a server answered but gave no lease' : 'no DHCP server'} in ${Date.now() - started} ms`);
    return result;
  }

  async function setUp(name: string): Promise<PxeLink | undefined> {
    checkInterfaceName(name);
    const found = await probe(name);
    if (closed) return undefined;
    if (found.answered && !found.lease) {
      log.warn(`PXE on ${name} is off: a DHCP server answers there but gave this laptop no address to serve from`);
      return undefined;
    }
    let mode: PxeMode;
    let address: string;
    let prefixLength: number;
    let range: { first: string; last: string } | undefined;
    let n = 0;
    if (found.lease) {
      mode = 'proxy';
      ({ address, prefixLength } = found.lease);
    } else {
      mode = 'dhcp';
      for (n = 1; usedNumbers.has(n); n++);
      ({ address, prefixLength, range } = linkAddressing(o.pxe.subnet, n));
      usedNumbers.add(n);
    }
    const addedAddress = `${address}/${prefixLength}`;
    const link: PxeLink = { interface: name, mode, address, prefixLength, bootUrl: bootScriptUrl(address, o.pxe.httpPort) };
    const confFile = posix.join(o.runDir, `${name}.conf`);
    await writeFile(
      confFile,
      dnsmasqConf({ interface: name, mode, address, prefixLength, range, httpPort: o.pxe.httpPort, tftpRoot, leaseFile: posix.join(o.runDir, `${name}.leases`), user: o.user }),
    );
    try {
      await ip(['addr', 'add', addedAddress, 'dev', name]);
    } catch (err) {
      usedNumbers.delete(n);
      throw err;
    }
    const dnsmasq = new DnsmasqSupervisor(o.dnsmasq, confFile, name, o, log.child('dnsmasq'));
    const state: LinkState = { link, n, dnsmasq, addedAddress };
    try {
      await dnsmasq.start();
    } catch (err) {
      await undo(state);
      throw err;
    }
    states.set(name, state);
    log.info(
      mode === 'dhcp'
        ? `PXE on ${name}: ${address}/${prefixLength}, leases ${range!.first}-${range!.last.split('.').pop()} to PXE clients only; boot script ${link.bootUrl}`
        : `PXE on ${name}: ProxyDHCP beside the DHCP server ${found.lease!.server} (this laptop is ${address}/${prefixLength}, leased for ${found.lease!.seconds} s); boot script ${link.bootUrl}`,
    );
    return link;
  }

  async function undo(state: LinkState): Promise<void> {
    await state.dnsmasq.stop();
    await o.runner.run(o.ip, ['addr', 'del', state.addedAddress, 'dev', state.link.interface]).catch(() => undefined);
    if (state.n) usedNumbers.delete(state.n);
  }

  const services: PxeServices = {
    enabled: true,
    addLink(name) {
      if (closed) return Promise.resolve(undefined);
      const known = states.get(name);
      if (known) return Promise.resolve(known.link);
      const running = pending.get(name);
      if (running) return running;
      const p = setUp(name)
        .catch((err: Error) => {
          log.warn(`PXE on ${name} is off: ${err.message}`);
          return undefined;
        })
        .finally(() => pending.delete(name));
      pending.set(name, p);
      return p;
    },
    async removeLink(name) {
      await pending.get(name);
      const state = states.get(name);
      if (!state) return;
      states.delete(name);
      await undo(state);
    },
    links: () => [...states.values()].map((s) => s.link),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([...pending.values()]);
      await Promise.all([...states.keys()].map((name) => services.removeLink(name)));
    },
  };
  if (signal.aborted) await services.close();
  else signal.addEventListener('abort', () => void services.close(), { once: true });
  return services;
}
