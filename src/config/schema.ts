// The configuration: its typed shape, its defaults and its validation.
//
// Pure: takes the parsed YAML value and the file name (for messages) and
// returns a frozen, fully resolved object, or throws a ConfigError that names
// the key, the file and what is allowed. Paths are resolved against the
// directory of the config file.
import { isAbsolute, join, resolve } from 'node:path';
import { StiefelError } from '../errors';

export const DEFAULT_CONFIG_PATH = '/etc/stiefelsystem/config.yaml';

export const INITRAMFS_FAMILIES = ['initramfs-tools', 'dracut', 'mkinitcpio'] as const;
export type InitramfsFamily = (typeof INITRAMFS_FAMILIES)[number];

export const DEFAULT_DISCOVERY_PORT = 61570;
export const DEFAULT_PAYLOAD_PORT = 4644;
export const DEFAULT_NBD_PORT = 10809;
export const DEFAULT_WIREGUARD_PORT = 51820;

export interface NetworkConfig {
  /** `all` (every interface but lo) or the names to use. */
  readonly interfaces: 'all' | readonly string[];
  /** Interface names (or `prefix*` patterns) never touched. */
  readonly exclude: readonly string[];
  /** How often new interfaces are looked for, ms. */
  readonly watchIntervalMs: number;
}

export interface DiscoveryConfig {
  readonly port: number;
  /** The client repeats its request on every interface this often. */
  readonly retryIntervalMs: number;
  /** The client gives up after this long; 0 waits forever. */
  readonly timeoutS: number;
  /** How far a request's timestamp may be from the server's clock. */
  readonly maxClockSkewS: number;
  /** Also use IPv4 broadcast on interfaces that have an IPv4 address. */
  readonly ipv4Broadcast: boolean;
}

export interface PayloadConfig {
  readonly port: number;
}

export interface BootConfig {
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
  readonly family: InitramfsFamily;
}

/** How the laptop OS's initramfs attaches the disk. */
export const ATTACH_MODES = ['stiefelsystem', 'family'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

export interface WireGuardConfig {
  /** Serve the disk only through a WireGuard tunnel with fresh keys for every boot. */
  readonly enabled: boolean;
  /** UDP port of the laptop's end of the tunnel. */
  readonly port: number;
}

export interface ServerConfig {
  /** The laptop OS to hand to the desktop, named explicitly; undefined: found on `disk`. */
  readonly boot: BootConfig | undefined;
  /** The laptop OS's initramfs family when the disk does not record it (setup-server-os does). */
  readonly family: InitramfsFamily | undefined;
  /** Command line for kernels found without one, when the disk does not record it. */
  readonly cmdline: string | undefined;
  /** Words added to the laptop OS's command line on the desktop (e.g. `quiet`). */
  readonly cmdlineAppend: string;
  /**
   * `stiefelsystem`: the laptop OS has stiefelsystem's hooks (setup-server-os)
   * and reads stiefel.* parameters; `family`: its initramfs family's own NBD
   * support is used (nbdroot=, netroot=nbd:, nbd_host=), without WireGuard.
   */
  readonly attach: AttachMode;
  readonly wireguard: WireGuardConfig;
  /** The disk (file or block device) served over NBD; undefined: none. */
  readonly disk: string | undefined;
  readonly nbd: { readonly port: number; readonly export: string };
  /** How long the client that fetched the payload keeps the server for itself, waiting for its disk connection. */
  readonly handoffTimeoutS: number;
  /** Name shown to clients; defaults to the host name. */
  readonly name: string | undefined;
}

export interface ClientConfig {
  /** Name the laptop OS's initramfs gives the NIC that reaches the laptop. */
  readonly linkInterface: string;
  /** Largest file the client accepts in a payload, bytes. */
  readonly maxFileBytes: number;
  /** A download that receives nothing for this long fails, s. */
  readonly stallTimeoutS: number;
  /** Words added to the kernel command line of every entry on the boot stick (create-usbdrive). */
  readonly cmdlineAppend: string;
}

export interface Config {
  /** The file this came from, or undefined for built-in defaults. */
  readonly file: string | undefined;
  readonly secret: string;
  readonly network: NetworkConfig;
  readonly discovery: DiscoveryConfig;
  readonly payload: PayloadConfig;
  readonly server: ServerConfig;
  readonly client: ClientConfig;
}

export class ConfigError extends StiefelError {
  readonly key: string | undefined;
  constructor(message: string, options: { key?: string; cause?: unknown } = {}) {
    super('E_CONFIG', message, options);
    this.key = options.key;
  }
}

type Raw = Record<string, unknown>;

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `'${value.length > 60 ? `${value.slice(0, 60)}...` : value}'`;
  return String(value);
}

/** Reads one mapping, tracking the key path and refusing unknown keys. */
class Section {
  readonly #raw: Raw;
  readonly #path: string;
  readonly #file: string;
  readonly #seen = new Set<string>();

  constructor(raw: Raw, path: string, file: string) {
    this.#raw = raw;
    this.#path = path;
    this.#file = file;
  }

  key(name: string): string {
    return this.#path ? `${this.#path}.${name}` : name;
  }

  fail(name: string, allowed: string, value: unknown): never {
    throw new ConfigError(`config ${this.#file}: ${this.key(name)} must be ${allowed}, not ${describe(value)}`, { key: this.key(name) });
  }

  get(name: string): unknown {
    this.#seen.add(name);
    return this.#raw[name];
  }

  int(name: string, def: number, min: number, max: number): number {
    const v = this.get(name);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) this.fail(name, `an integer from ${min} to ${max}`, v);
    return v;
  }

  bool(name: string, def: boolean): boolean {
    const v = this.get(name);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') this.fail(name, 'true or false', v);
    return v;
  }

  str(name: string, options: { pattern?: RegExp; allowed?: string; def?: string } = {}): string | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return options.def;
    const allowed = options.allowed ?? 'a string';
    if (typeof v !== 'string') this.fail(name, allowed, v);
    if (options.pattern && !options.pattern.test(v)) this.fail(name, allowed, v);
    return v;
  }

  oneOf<T extends string>(name: string, values: readonly T[], def: T | undefined): T | undefined {
    const v = this.get(name);
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) this.fail(name, `one of ${values.join(', ')}`, v);
    return v as T;
  }

  path(name: string, base: string, def?: string): string | undefined {
    const v = this.str(name, { allowed: 'a file path', def, pattern: /^[^\0]+$/ });
    if (v === undefined) return undefined;
    return isAbsolute(v) ? v : resolve(base, v);
  }

  stringList(name: string, def: readonly string[], item: { pattern: RegExp; allowed: string }): readonly string[] {
    const v = this.get(name);
    if (v === undefined || v === null) return def;
    if (!Array.isArray(v)) this.fail(name, `a list of ${item.allowed}`, v);
    return v.map((x, i) => {
      if (typeof x !== 'string' || !item.pattern.test(x)) this.fail(`${name}[${i}]`, item.allowed, x);
      return x;
    });
  }

  section(name: string): Section {
    const v = this.get(name);
    if (v === undefined || v === null) return new Section({}, this.key(name), this.#file);
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(name, 'a mapping', v);
    return new Section(v as Raw, this.key(name), this.#file);
  }

  has(name: string): boolean {
    return this.#raw[name] !== undefined && this.#raw[name] !== null;
  }

  /** Throws for the first key that no reader asked for (a typo, usually). */
  done(): void {
    for (const k of Object.keys(this.#raw)) {
      if (!this.#seen.has(k)) {
        const allowed = [...this.#seen].sort().join(', ');
        throw new ConfigError(`config ${this.#file}: unknown key '${this.key(k)}' (allowed here: ${allowed})`, { key: this.key(k) });
      }
    }
  }
}

/** Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace. */
export const IFNAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;
const IFNAME_OR_GLOB = /^[A-Za-z0-9_.-]{1,15}\*?$/;
const EXPORT_NAME = /^[A-Za-z0-9_.:+-]{1,64}$/;
/** Anything but quotes, backslashes and control characters: it goes onto a kernel command line. */
const CMDLINE_TEXT = /^[^"'\\\x00-\x1f\x7f]*$/;

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * Validates a parsed config document. `file` is used in messages and to
 * resolve relative paths; pass undefined for the built-in defaults (paths are
 * then relative to `baseDir`).
 */
export function validateConfig(raw: unknown, file: string | undefined, baseDir = '/etc/stiefelsystem'): Config {
  const name = file ?? '(defaults)';
  const base = file ? resolve(file, '..') : baseDir;
  if (raw === undefined || raw === null) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`config ${name}: the file must be a YAML mapping of keys (secret, network, discovery, payload, server, client), not ${describe(raw)}`);
  }
  const top = new Section(raw as Raw, '', name);
  const secret = top.path('secret', base, 'secret')!;

  const net = top.section('network');
  const ifaces = net.get('interfaces');
  let interfaces: 'all' | readonly string[] = 'all';
  if (ifaces !== undefined && ifaces !== null && ifaces !== 'all') {
    interfaces = net.stringList('interfaces', [], { pattern: IFNAME_PATTERN, allowed: 'an interface name (1 to 15 letters, digits, _ . -)' });
    if (interfaces.length === 0) net.fail('interfaces', "'all' or a non-empty list of interface names", ifaces);
  }
  const network: NetworkConfig = {
    interfaces,
    exclude: net.stringList('exclude', [], { pattern: IFNAME_OR_GLOB, allowed: "an interface name, or a prefix ending in '*'" }),
    watchIntervalMs: net.int('watch_interval_ms', 250, 20, 60_000),
  };
  net.done();

  const disc = top.section('discovery');
  const discovery: DiscoveryConfig = {
    port: disc.int('port', DEFAULT_DISCOVERY_PORT, 1, 65535),
    retryIntervalMs: disc.int('retry_interval_ms', 50, 5, 10_000),
    timeoutS: disc.int('timeout_s', 0, 0, 86_400),
    maxClockSkewS: disc.int('max_clock_skew_s', 600, 1, 7 * 86_400),
    ipv4Broadcast: disc.bool('ipv4_broadcast', true),
  };
  disc.done();

  const pay = top.section('payload');
  const payload: PayloadConfig = { port: pay.int('port', DEFAULT_PAYLOAD_PORT, 1, 65535) };
  pay.done();

  const srv = top.section('server');
  let boot: BootConfig | undefined;
  if (srv.has('boot')) {
    const b: Section = srv.section('boot');
    const kernel = b.path('kernel', base);
    const initrd = b.path('initrd', base);
    if (!kernel) b.fail('kernel', 'the path of the laptop OS kernel', undefined);
    if (!initrd) b.fail('initrd', 'the path of the laptop OS initrd', undefined);
    const cmdline = b.str('cmdline', { pattern: CMDLINE_TEXT, allowed: 'the kernel command line, without quotes or backslashes', def: '' })!;
    const family = b.oneOf('family', INITRAMFS_FAMILIES, 'initramfs-tools')!;
    boot = { kernel, initrd, cmdline: cmdline.trim().replace(/\s+/g, ' '), family };
    b.done();
  } else {
    srv.get('boot');
  }
  const nbdSec = srv.section('nbd');
  const nbd = {
    port: nbdSec.int('port', DEFAULT_NBD_PORT, 1, 65535),
    export: nbdSec.str('export', { pattern: EXPORT_NAME, allowed: 'an export name (1 to 64 letters, digits, _ . : + -)', def: 'disk' })!,
  };
  nbdSec.done();
  const wgSec = srv.section('wireguard');
  const wireguard: WireGuardConfig = {
    enabled: wgSec.bool('enabled', true),
    port: wgSec.int('port', DEFAULT_WIREGUARD_PORT, 1, 65535),
  };
  wgSec.done();
  const attach = srv.oneOf('attach', ATTACH_MODES, 'stiefelsystem')!;
  if (attach === 'family' && wireguard.enabled) {
    srv.fail('attach', "'stiefelsystem' while server.wireguard.enabled is true (the family's own NBD support cannot set up the tunnel)", attach);
  }
  const cmdlineText = (name: string): string | undefined =>
    srv.str(name, { pattern: CMDLINE_TEXT, allowed: 'kernel command line words, without quotes or backslashes' })?.trim().replace(/\s+/g, ' ');
  const server: ServerConfig = {
    boot,
    family: srv.oneOf('family', INITRAMFS_FAMILIES, undefined),
    cmdline: cmdlineText('cmdline'),
    cmdlineAppend: cmdlineText('cmdline_append') ?? '',
    attach,
    wireguard,
    disk: srv.path('disk', base),
    nbd,
    handoffTimeoutS: srv.int('handoff_timeout_s', 300, 1, 86_400),
    name: srv.str('name', { pattern: /^[A-Za-z0-9_.-]{1,64}$/, allowed: 'a name (1 to 64 letters, digits, _ . -)' }),
  };
  srv.done();

  const cli = top.section('client');
  const client: ClientConfig = {
    linkInterface: cli.str('link_interface', { pattern: IFNAME_PATTERN, allowed: 'an interface name (1 to 15 letters, digits, _ . -)', def: 'stiefellink' })!,
    maxFileBytes: cli.int('max_file_bytes', 8 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    stallTimeoutS: cli.int('stall_timeout_s', 30, 1, 3600),
    cmdlineAppend: cli.str('cmdline_append', { pattern: CMDLINE_TEXT, allowed: 'kernel command line words, without quotes or backslashes' })?.trim().replace(/\s+/g, ' ') ?? '',
  };
  cli.done();
  top.done();

  return deepFreeze({ file, secret, network, discovery, payload, server, client });
}

/** Where the config lives: --config, else $STIEFEL_CONFIG, else the default. */
export function configPath(flag: string | undefined, env: Readonly<Record<string, string | undefined>>, cwd: string): string {
  const p = flag ?? env.STIEFEL_CONFIG ?? DEFAULT_CONFIG_PATH;
  return isAbsolute(p) ? p : join(cwd, p);
}
