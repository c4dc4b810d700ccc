// Which module files a set of wanted modules needs: each module's hard
// dependencies from modules.dep and its soft dependencies (modules.softdep),
// resolved the way modprobe resolves a name: a module of that name, else an
// alias with exactly that text, else a module built into the kernel. Pure.
import {
  builtinAliases,
  DepmodParseError,
  moduleNameFromPath,
  normalizeModuleName,
  parseModulesAlias,
  parseModulesBuiltin,
  parseModulesDep,
  parseModulesSoftdep,
  type SoftDep,
} from './depmod-files';

export interface ModuleIndex {
  /** Module path (relative to the modules directory) → its dependencies' paths. */
  deps: ReadonlyMap<string, readonly string[]>;
  /** Normalised module name → module path. */
  byName: ReadonlyMap<string, string>;
  /** Names of modules built into the kernel. */
  builtin: ReadonlySet<string>;
  /** Exact alias text → normalised module names (loadable and built-in). */
  aliases: ReadonlyMap<string, readonly string[]>;
  softdeps: ReadonlyMap<string, SoftDep>;
}

export interface DepmodTexts {
  dep: string;
  builtin?: string;
  alias?: string;
  softdep?: string;
  builtinModinfo?: Uint8Array;
}

export function buildModuleIndex(files: DepmodTexts): ModuleIndex {
  const deps = parseModulesDep(files.dep);
  const byName = new Map<string, string>();
  for (const path of deps.keys()) byName.set(moduleNameFromPath(path), path);
  const aliases = new Map<string, string[]>();
  const allAliases = [
    ...(files.alias ? parseModulesAlias(files.alias) : []),
    ...(files.builtinModinfo ? builtinAliases(files.builtinModinfo) : []),
  ];
  for (const { pattern, module } of allAliases) {
    if (/[*?[]/.test(pattern)) continue; // device patterns: only exact names matter here
    const list = aliases.get(pattern) ?? [];
    if (!list.includes(module)) list.push(module);
    aliases.set(pattern, list);
  }
  return {
    deps,
    byName,
    builtin: files.builtin ? parseModulesBuiltin(files.builtin) : new Set(),
    aliases,
    softdeps: files.softdep ? parseModulesSoftdep(files.softdep) : new Map(),
  };
}

export interface ModuleResolution {
  /** Module files that provide the name (several for an alias like `aes`). */
  paths: string[];
  /** The name (or one module behind the alias) is built into the kernel. */
  builtin: boolean;
}

/** What `modprobe NAME` would load: a module, an exact alias, or nothing because it is built in. */
export function resolveModule(index: ModuleIndex, nameOrAlias: string): ModuleResolution {
  const name = normalizeModuleName(nameOrAlias);
  const direct = index.byName.get(name);
  if (direct !== undefined) return { paths: [direct], builtin: false };
  if (index.builtin.has(name)) return { paths: [], builtin: true };
  const viaAlias = index.aliases.get(nameOrAlias) ?? index.aliases.get(name) ?? [];
  const paths: string[] = [];
  let builtin = false;
  for (const m of viaAlias) {
    const p = index.byName.get(m);
    if (p !== undefined) paths.push(p);
    else if (index.builtin.has(m)) builtin = true;
  }
  return { paths: [...new Set(paths)].sort(), builtin };
}

export interface ModuleClosure {
  /** Every module file needed, sorted. */
  paths: string[];
  /** Soft dependencies that name nothing in this kernel (modprobe ignores them too). */
  unresolvedSoftdeps: string[];
}

/** The wanted module paths plus everything they depend on, hard and soft. */
export function moduleClosure(index: ModuleIndex, roots: Iterable<string>): ModuleClosure {
  const seen = new Set<string>();
  const unresolved = new Set<string>();
  const queue: string[] = [];
  const add = (path: string): void => {
    if (seen.has(path)) return;
    if (!index.deps.has(path)) throw new DepmodParseError(`module path ${path} is not in modules.dep`);
    seen.add(path);
    queue.push(path);
  };
  for (const r of roots) add(r);
  while (queue.length > 0) {
    const path = queue.pop()!;
    for (const d of index.deps.get(path) ?? []) {
      if (!index.deps.has(d)) throw new DepmodParseError(`modules.dep names ${d} as a dependency of ${path} but has no line for it`);
      add(d);
    }
    const soft = index.softdeps.get(moduleNameFromPath(path));
    for (const s of soft ? [...soft.pre, ...soft.post] : []) {
      const r = resolveModule(index, s);
      if (r.paths.length === 0 && !r.builtin) unresolved.add(s);
      for (const p of r.paths) add(p);
    }
  }
  return { paths: [...seen].sort(), unresolvedSoftdeps: [...unresolved].sort() };
}
