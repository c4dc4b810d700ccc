// Pure parsers and writers for the text files depmod(8) leaves in
// /lib/modules/VERSION (see depmod(8), modules.dep(5) and modprobe.d(5)):
//
//   modules.dep              "kernel/a/b.ko: kernel/c.ko kernel/d.ko" (every
//                            dependency of the module, transitively)
//   modules.alias            "alias PATTERN module_name" (fnmatch patterns)
//   modules.softdep          "softdep module_name pre: a b post: c"
//   modules.builtin          "kernel/a/b.ko" for every built-in module
//   modules.builtin.modinfo  NUL-separated "module.key=value"
//   modules.order            one module path per line, in build order
//
// and the `.modinfo` section of a module: NUL-separated "key=value".

export class DepmodParseError extends Error {}

const MODULE_SUFFIX = /\.ko(\.(gz|xz|zst))?$/;

/** `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`; dashes become underscores, as the kernel names modules. */
export function moduleNameFromPath(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return normalizeModuleName(base.replace(MODULE_SUFFIX, ''));
}

/** Module names are compared with `-` and `_` as the same character (kmod does the same). */
export function normalizeModuleName(name: string): string {
  return name.replace(/-/g, '_');
}

function lines(text: string): Array<{ line: string; number: number }> {
  const out: Array<{ line: string; number: number }> = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line !== '' && !line.startsWith('#')) out.push({ line, number: i + 1 });
  });
  return out;
}

/** modules.dep: module path → its dependencies' paths, in file order. */
export function parseModulesDep(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const { line, number } of lines(text)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new DepmodParseError(`modules.dep line ${number}: no 'path:' at the start`);
    const path = line.slice(0, colon);
    if (!MODULE_SUFFIX.test(path)) throw new DepmodParseError(`modules.dep line ${number}: '${path}' is not a .ko path`);
    const deps = line.slice(colon + 1).split(/\s+/).filter(Boolean);
    out.set(path, deps);
  }
  return out;
}

/** modules.builtin: the names of modules compiled into the kernel. */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(lines(text).map(({ line }) => moduleNameFromPath(line)));
}

export interface ModuleAlias {
  pattern: string;
  module: string;
}

/** modules.alias: `alias PATTERN module`. */
export function parseModulesAlias(text: string): ModuleAlias[] {
  const out: ModuleAlias[] = [];
  for (const { line, number } of lines(text)) {
    const parts = line.split(/\s+/);
    if (parts.length !== 3 || parts[0] !== 'alias') {
      throw new DepmodParseError(`modules.alias line ${number}: expected 'alias PATTERN MODULE'`);
    }
    out.push({ pattern: parts[1]!, module: normalizeModuleName(parts[2]!) });
  }
  return out;
}

export interface SoftDep {
  pre: string[];
  post: string[];
}

/**
 * modules.softdep (and the `softdep` command of modprobe.d): `softdep MODULE
 * [pre: A B...] [post: C...]`; names before any `pre:`/`post:` count as pre
 * (modprobe.d(5) allows that form and depmod writes it, e.g. "softdep cifs gcm").
 */
export function parseModulesSoftdep(text: string): Map<string, SoftDep> {
  const out = new Map<string, SoftDep>();
  for (const { line, number } of lines(text)) {
    const parts = line.split(/\s+/);
    if (parts[0] !== 'softdep' || parts.length < 3) {
      throw new DepmodParseError(`modules.softdep line ${number}: expected 'softdep MODULE pre: ... post: ...'`);
    }
    const name = normalizeModuleName(parts[1]!);
    const dep = out.get(name) ?? { pre: [], post: [] };
    let into = dep.pre;
    for (const word of parts.slice(2)) {
      if (word === 'pre:') into = dep.pre;
      else if (word === 'post:') into = dep.post;
      else into.push(word);
    }
    out.set(name, dep);
  }
  return out;
}

/** `.modinfo` section bytes or modules.builtin.modinfo: NUL-separated `key=value` strings. */
export function parseModinfo(bytes: Uint8Array): Array<{ key: string; value: string }> {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  const out: Array<{ key: string; value: string }> = [];
  for (const item of text.split('\0')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq <= 0) continue; // padding or garbage between entries: modinfo(8) skips it too
    out.push({ key: item.slice(0, eq), value: item.slice(eq + 1) });
  }
  return out;
}

/** The firmware files a module declares with MODULE_FIRMWARE(), from its `.modinfo`. */
export function modinfoFirmware(bytes: Uint8Array): string[] {
  return parseModinfo(bytes)
    .filter((e) => e.key === 'firmware')
    .map((e) => e.value);
}

/** modules.builtin.modinfo: the aliases of built-in modules, as `{pattern, module}`. */
export function builtinAliases(bytes: Uint8Array): ModuleAlias[] {
  const out: ModuleAlias[] = [];
  for (const { key, value } of parseModinfo(bytes)) {
    const dot = key.indexOf('.');
    if (dot > 0 && key.slice(dot + 1) === 'alias') out.push({ pattern: value, module: normalizeModuleName(key.slice(0, dot)) });
  }
  return out;
}

/**
 * Writes modules.order back with only the given module paths, keeping the
 * kernel's order. modules.order names `x.ko` even when the file installed is
 * `x.ko.xz`, so paths are compared without the compression suffix.
 */
export function filterModulesOrder(text: string, keep: Iterable<string>): string {
  const bare = (p: string): string => p.replace(/\.(gz|xz|zst)$/, '');
  const wanted = new Set([...keep].map(bare));
  return lines(text)
    .map(({ line }) => line)
    .filter((l) => wanted.has(bare(l)))
    .map((l) => `${l}\n`)
    .join('');
}
