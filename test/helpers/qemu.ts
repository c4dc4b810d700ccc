// Starts QEMU virtual machines for tests: kernel + initrd + command line, NICs
// (user networking, a point-to-point link between two VMs, a multicast
// segment, a tap), disks, memory. The serial console is captured into a
// buffer and a log file; waitFor() waits for a regular expression on it.
//
// A VM is always killed: by stop()/withVms() (also when the test fails), on
// process exit, and — should the test process be killed outright — by the
// kernel, because QEMU runs under `setpriv --pdeathsig KILL`.
//
// Flags from PLATFORM-NOTES.md: software emulation only (KVM hangs here),
// -nodefaults -display none -no-reboot, serial on stdio (signal=off, so a ^C
// in the input does not stop QEMU), -pidfile.
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, createWriteStream, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { requireTool } from './tools';

export type NetdevSpec =
  /** QEMU's user-mode network (slirp): the guest reaches nothing but itself. */
  | { type: 'user' }
  /** One end of a point-to-point Ethernet link between two VMs over unix datagram sockets (see dgramLink). */
  | { type: 'dgram'; localPath: string; remotePath: string }
  /** A segment shared by every VM on the same group and port (run inside a network namespace, see PLATFORM-NOTES). */
  | { type: 'mcast'; group: string; port: number; localAddr?: string }
  /** A tap device that exists already (e.g. on a bridge inside a network namespace). */
  | { type: 'tap'; ifname: string }
  /** Anything else: the -netdev value after `id=...,`, e.g. `socket,listen=:1234`. */
  | { type: 'raw'; value: string };

export interface NicSpec {
  netdev: NetdevSpec;
  /** e.g. 52:54:00:12:34:56; QEMU picks one when omitted. */
  mac?: string;
  /** The device model, virtio-net-pci by default (e1000e, rtl8139, ...). */
  model?: string;
  /** The NIC's option ROM; '' for none (no PXE boot attempt before the disk's). */
  romfile?: string;
  /** The firmware boots from this NIC (PXE through its ROM, QEMU's iPXE). */
  bootIndex?: number;
}

export interface DiskSpec {
  path: string;
  format?: 'raw' | 'qcow2';
  readOnly?: boolean;
  /** Writes go to a temporary overlay, the file stays untouched. */
  snapshot?: boolean;
  /** virtio-blk (default) or another -device model such as nvme (needs serial). */
  model?: string;
  serial?: string;
  /** The firmware boots this disk first (a laptop that starts from its own disk). */
  bootIndex?: number;
}

export interface VmOptions {
  /** Names the log file and appears in error messages. */
  name: string;
  /** Booted directly (-kernel); leave out to let the firmware boot a disk (usbStick). */
  kernel?: string;
  initrd?: string;
  append?: string;
  memoryMiB?: number;
  cpus?: number;
  nics?: NicSpec[];
  disks?: DiskSpec[];
  /** More QEMU arguments, appended as they are. */
  extraArgs?: string[];
  /** The QEMU binary; $QEMU or qemu-system-x86_64 by default. */
  qemu?: string;
  /** Open a QMP socket so the test can drive QEMU (hotplug, link down, ...) with vm.qmp(). */
  qmp?: boolean;
  /** Run QEMU inside this network namespace (for tap NICs made there). */
  netns?: string;
  /** Called with every complete line of console output (for narration). */
  onLine?: (line: string) => void;
  /** UEFI firmware (see ovmfFirmware); SeaBIOS, QEMU's default, when left out. */
  uefi?: UefiFirmware;
  /** A disk image plugged in as a USB stick (qemu-xhci + usb-storage), booted first. */
  usbStick?: { path: string; snapshot?: boolean };
}

/** OVMF's code (read-only) and a private copy of its variable store. */
export interface UefiFirmware {
  code: string;
  vars: string;
}

interface FirmwareDescriptor {
  'interface-types'?: string[];
  mapping?: { device?: string; executable?: { filename?: string }; 'nvram-template'?: { filename?: string } };
  targets?: { architecture?: string; machines?: string[] }[];
  features?: string[];
}

/**
 * Finds x86_64 UEFI firmware for q35 through QEMU's firmware descriptors
 * (/usr/share/qemu/firmware/*.json, installed with the ovmf package), without
 * Secure Boot or SMM, and copies its variable store template into `dir`: a
 * fresh store for every VM, so no boot entry of an earlier run is left.
 */
export function ovmfFirmware(dir: string, descriptorDirs = ['/etc/qemu/firmware', '/usr/share/qemu/firmware']): UefiFirmware {
  const names: string[] = [];
  for (const d of descriptorDirs) {
    try {
      for (const n of readdirSync(d).sort()) if (n.endsWith('.json')) names.push(join(d, n));
    } catch {
      /* no such directory */
    }
  }
  for (const file of names) {
    let desc: FirmwareDescriptor;
    try {
      desc = JSON.parse(readFileSync(file, 'utf8')) as FirmwareDescriptor;
    } catch {
      continue;
    }
    const features = desc.features ?? [];
    const code = desc.mapping?.executable?.filename;
    const vars = desc.mapping?.['nvram-template']?.filename;
    if (!desc['interface-types']?.includes('uefi') || desc.mapping?.device !== 'flash' || !code || !vars) continue;
    if (features.some((f) => f === 'secure-boot' || f === 'requires-smm' || f === 'enrolled-keys')) continue;
    if (!desc.targets?.some((t) => t.architecture === 'x86_64' && t.machines?.some((m) => m.startsWith('pc-q35')))) continue;
    const copy = join(dir, `${basename(vars)}.copy-${process.pid}-${Date.now()}`);
    copyFileSync(vars, copy);
    return { code, vars: copy };
  }
  throw new Error(`no x86_64 UEFI firmware without Secure Boot among ${names.length} QEMU firmware descriptors: run 'sudo scripts/setup.sh' (installs ovmf)`);
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<QemuVm>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const vm of live) vm.killNow();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const vm of live) vm.killNow();
      process.kill(process.pid, sig);
    });
  }
}

/** Both ends of a point-to-point link between two VMs: give the first to one VM, the second to the other. */
export function dgramLink(dir: string, name: string): [NetdevSpec, NetdevSpec] {
  const a = join(dir, `${name}-a.sock`);
  const b = join(dir, `${name}-b.sock`);
  for (const p of [a, b]) {
    try {
      unlinkSync(p); // QEMU refuses to bind a stale socket path
    } catch {
      /* not there */
    }
  }
  return [
    { type: 'dgram', localPath: a, remotePath: b },
    { type: 'dgram', localPath: b, remotePath: a },
  ];
}

function netdevArg(id: string, n: NetdevSpec): string {
  switch (n.type) {
    case 'user':
      return `user,id=${id}`;
    case 'dgram':
      return `dgram,id=${id},local.type=unix,local.path=${n.localPath},remote.type=unix,remote.path=${n.remotePath}`;
    case 'mcast':
      return `socket,id=${id},mcast=${n.group}:${n.port}${n.localAddr ? `,localaddr=${n.localAddr}` : ''}`;
    case 'tap':
      return `tap,id=${id},ifname=${n.ifname},script=no,downscript=no`;
    case 'raw': {
      const comma = n.value.indexOf(',');
      return comma < 0 ? `${n.value},id=${id}` : `${n.value.slice(0, comma)},id=${id}${n.value.slice(comma)}`;
    }
  }
}

/** The QEMU command line for `options` (exported for tests of the helper itself). */
export function qemuArgs(options: VmOptions, pidfile: string, qmpSocket?: string): string[] {
  const args = [
    '-machine', 'q35,accel=tcg',
    '-cpu', 'max',
    '-m', String(options.memoryMiB ?? 512),
    '-smp', String(options.cpus ?? 1),
    '-display', 'none',
    '-nodefaults',
    '-no-reboot',
    '-monitor', 'none',
    '-chardev', 'stdio,id=console0,signal=off',
    '-serial', 'chardev:console0',
    '-pidfile', pidfile,
  ];
  if (options.kernel !== undefined) args.push('-kernel', options.kernel);
  if (options.uefi !== undefined) {
    args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${options.uefi.code}`);
    args.push('-drive', `if=pflash,format=raw,unit=1,file=${options.uefi.vars}`);
  }
  if (options.usbStick !== undefined) {
    args.push('-drive', `if=none,id=usbstick,format=raw,file=${options.usbStick.path}${options.usbStick.snapshot ? ',snapshot=on' : ''}`);
    args.push('-device', 'qemu-xhci,id=xhci', '-device', 'usb-storage,bus=xhci.0,drive=usbstick,bootindex=1');
  }
  if (options.initrd !== undefined) args.push('-initrd', options.initrd);
  if (options.append !== undefined) args.push('-append', options.append);
  (options.nics ?? []).forEach((nic, i) => {
    args.push('-netdev', netdevArg(`net${i}`, nic.netdev));
    args.push('-device', `${nic.model ?? 'virtio-net-pci'},netdev=net${i}${nic.mac ? `,mac=${nic.mac}` : ''}${nic.romfile !== undefined ? `,romfile=${nic.romfile}` : ''}${nic.bootIndex !== undefined ? `,bootindex=${nic.bootIndex}` : ''}`);
  });
  (options.disks ?? []).forEach((d, i) => {
    const drive = [`file=${d.path}`, `format=${d.format ?? 'raw'}`, 'if=none', `id=disk${i}`];
    if (d.readOnly) drive.push('readonly=on');
    if (d.snapshot) drive.push('snapshot=on');
    args.push('-drive', drive.join(','));
    args.push('-device', `${d.model ?? 'virtio-blk-pci'},drive=disk${i}${d.serial ? `,serial=${d.serial}` : ''}${d.bootIndex !== undefined ? `,bootindex=${d.bootIndex}` : ''}`);
  });
  if (qmpSocket !== undefined) args.push('-qmp', `unix:${qmpSocket},server=on,wait=off`);
  args.push(...(options.extraArgs ?? []));
  return args;
}

export class QemuVm {
  readonly name: string;
  /** Directory holding the pidfile and the console log; removed by stop() unless kept. */
  readonly dir: string;
  readonly logPath: string;
  readonly exited: Promise<VmExit>;
  #child: ChildProcess;
  #log: WriteStream;
  #console = '';
  #exit: VmExit | undefined;
  #waiters = new Set<() => void>();
  #pidfile: string;
  #qmpSocket: string | undefined;

  constructor(options: VmOptions) {
    installExitHook();
    const qemu = options.qemu ?? process.env.QEMU ?? 'qemu-system-x86_64';
    requireTool(qemu);
    requireTool('setpriv');
    this.name = options.name;
    this.dir = mkdtempSync(join(tmpdir(), `${options.name.replace(/[^A-Za-z0-9_-]/g, '_')}-`));
    this.logPath = join(this.dir, 'console.log');
    this.#pidfile = join(this.dir, 'qemu.pid');
    this.#qmpSocket = options.qmp ? join(this.dir, 'qmp.sock') : undefined;
    this.#log = createWriteStream(this.logPath);
    // setpriv execs QEMU (same PID) with the parent-death signal set: QEMU dies with this process.
    // `ip netns exec` execs too, so the PID stays QEMU's.
    const argv = ['setpriv', '--pdeathsig', 'KILL', '--', qemu, ...qemuArgs(options, this.#pidfile, this.#qmpSocket)];
    if (options.netns !== undefined) argv.unshift('ip', 'netns', 'exec', options.netns);
    this.#child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this);
    let partial = '';
    const onData = (d: Buffer): void => {
      const text = d.toString('utf8');
      this.#console += text;
      if (options.onLine) {
        const lines = (partial + text).split('\n');
        partial = lines.pop()!;
        for (const line of lines) options.onLine(line.replace(/\r$/, ''));
      }
      this.#log.write(d);
      for (const w of this.#waiters) w();
    };
    this.#child.stdout!.on('data', onData);
    this.#child.stderr!.on('data', onData);
    this.#child.stdin!.on('error', () => undefined);
    this.exited = new Promise((resolve) => {
      this.#child.on('close', (code, signal) => {
        this.#exit = { code, signal };
        live.delete(this);
        this.#log.end();
        for (const w of this.#waiters) w();
        resolve(this.#exit);
      });
      this.#child.on('error', (err) => {
        this.#console += `\n[qemu helper] could not start ${qemu}: ${err.message}\n`;
      });
    });
  }

  /** Everything the VM printed so far (serial console and QEMU's own messages). */
  get console(): string {
    return this.#console;
  }

  get hasExited(): boolean {
    return this.#exit !== undefined;
  }

  /** The last `lines` lines of the console, for failure messages. */
  tail(lines = 40): string {
    return this.#console.replace(/\r/g, '').split('\n').slice(-lines).join('\n');
  }

  #failure(message: string): Error {
    return new Error(`${message}\n--- last console lines of VM ${this.name} (full log: ${this.logPath}) ---\n${this.tail()}\n---`);
  }

  /**
   * Resolves with the first match of `re` on the console (searched from
   * `from`, a console offset), or rejects when the time is up or the VM exits.
   */
  waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = this.#console.slice(from).match(re);
        if (m) {
          done();
          resolve(m);
          return true;
        }
        if (this.#exit !== undefined) {
          done();
          reject(this.#failure(`VM ${this.name} exited (${this.#exit.code ?? this.#exit.signal}) before printing ${re}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(this.#failure(`VM ${this.name} did not print ${re} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const waiter = (): void => void check();
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      this.#waiters.add(waiter);
      check();
    });
  }

  /**
   * Runs one QMP command (`device_add`, `set_link`, `query-status`, ...) and
   * resolves with its `return` value; a QMP error rejects. Needs `qmp: true`.
   */
  qmp(execute: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    const path = this.#qmpSocket;
    if (path === undefined) return Promise.reject(new Error(`VM ${this.name} was started without qmp: true`));
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      let buf = '';
      let stage = 0; // 0: greeting, 1: capabilities negotiated, 2: command sent
      const timer = setTimeout(() => finish(new Error(`QMP ${execute} on VM ${this.name}: no answer within ${timeoutMs} ms`)), timeoutMs);
      const finish = (err: Error | undefined, value?: unknown): void => {
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(value);
      };
      sock.on('error', (err) => finish(err));
      sock.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line === '') continue;
          const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string };
          if (msg.event !== undefined) continue;
          if (msg.error !== undefined) return finish(new Error(`QMP ${execute} on VM ${this.name}: ${msg.error.desc ?? JSON.stringify(msg.error)}`));
          if (stage === 0 && msg.QMP !== undefined) {
            stage = 1;
            sock.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
          } else if (stage === 1 && 'return' in msg) {
            stage = 2;
            sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
          } else if (stage === 2 && 'return' in msg) {
            return finish(undefined, msg.return);
          }
        }
      });
    });
  }

  /** Types on the serial console. */
  send(text: string): void {
    this.#child.stdin!.write(text);
  }

  /** Types on the PC keyboard (QMP send-key): what lands on the screen's console, tty0. Digits, letters, space and \r. */
  async typeKeys(text: string): Promise<void> {
    for (const ch of text) {
      const qcode = ch === '\r' || ch === '\n' ? 'ret' : ch === ' ' ? 'spc' : /^[0-9a-z]$/.test(ch) ? ch : undefined;
      if (qcode === undefined) throw new Error(`typeKeys cannot type ${JSON.stringify(ch)}`);
      await this.qmp('send-key', { keys: [{ type: 'qcode', data: qcode }] });
    }
  }

  /** Waits for QEMU to exit by itself (e.g. the guest powered off). */
  async waitForExit(timeoutMs: number): Promise<VmExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(this.#failure(`VM ${this.name} did not exit within ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The QEMU process id from its pidfile (undefined before QEMU wrote it). */
  pid(): number | undefined {
    try {
      const n = Number(readFileSync(this.#pidfile, 'utf8').trim());
      return Number.isInteger(n) && n > 0 ? n : undefined;
    } catch {
      return undefined;
    }
  }

  /** SIGKILL now, synchronously (used on process exit). */
  killNow(): void {
    if (this.#exit !== undefined) return;
    for (const pid of new Set([this.pid(), this.#child.pid])) {
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }

  /** Kills the VM (if running), waits for it, and removes its directory unless `keepLog`. */
  async stop(options: { keepLog?: boolean } = {}): Promise<VmExit> {
    this.killNow();
    const exit = await this.exited;
    if (!options.keepLog) rmSync(this.dir, { recursive: true, force: true });
    return exit;
  }
}

export function startVm(options: VmOptions): QemuVm {
  return new QemuVm(options);
}

/**
 * Starts the VMs, runs `fn`, and always kills them. When `fn` fails, the
 * error message gets the tail of every VM's console and the logs are kept.
 */
export async function withVms<T>(options: VmOptions[], fn: (vms: QemuVm[]) => Promise<T>): Promise<T> {
  const vms: QemuVm[] = [];
  let failed = false;
  try {
    for (const o of options) vms.push(startVm(o));
    return await fn(vms);
  } catch (err) {
    failed = true;
    const tails = vms
      .filter((vm) => !(err instanceof Error && err.message.includes(`VM ${vm.name} `)))
      .map((vm) => `--- last console lines of VM ${vm.name} (full log: ${vm.logPath}) ---\n${vm.tail()}`)
      .join('\n');
    if (err instanceof Error && tails) err.message += `\n${tails}`;
    throw err;
  } finally {
    await Promise.all(vms.map((vm) => vm.stop({ keepLog: failed })));
  }
}
