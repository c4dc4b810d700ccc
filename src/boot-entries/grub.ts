// Evaluates grub.cfg the way GRUB would to build its menu, for the common
// cases: top-level commands run in order (set, export, load_env, search,
// if/elif/else with `[`/test, functions, source), then every menu entry's body
// runs in the resulting environment, as when the user picks it. What cannot be
// evaluated is reported, not guessed: a condition we cannot decide (a
// `loadfont`, `hwmatch`, a file test on another disk) makes every variable it
// may change unknown, and an entry whose kernel, initrd or command line
// depends on an unknown value is skipped with the reason.
//
// Pure: file tests, `source` and `load_env` go through the callbacks in
// GrubContext; nothing here touches the file system.
import { parseGrubScript, literal, type Statement, type Word } from './grub-script';
import { normalizeBootPath, type Candidate, type GrubRootSpec, type ParseResult, type Skipped } from './types';

/** The device a path is on: the partition holding grub.cfg, or what `search`/`set root` named. */
export type GrubRoot = { kind: 'config' } | GrubRootSpec;

export interface GrubContext {
  /** grub.cfg's directory inside its partition, e.g. "/boot/grub" or "/grub2": GRUB's $prefix. */
  prefix: string;
  /** The environment block ($prefix/grubenv), parsed; undefined when there is none. */
  grubEnv?: ReadonlyMap<string, string>;
  /** 'efi' or 'pc' when known: $grub_platform. */
  platform?: 'efi' | 'pc';
  /** Whether a file exists (true/false) or cannot be known (undefined). */
  exists?: (root: GrubRoot, path: string, test: 'e' | 'f' | 'd' | 's') => boolean | undefined;
  /** Text of a file for `source`/`load_env -f`, undefined when unreadable. */
  readFile?: (root: GrubRoot, path: string) => string | undefined;
  /** How grub.cfg is named in messages. */
  what?: string;
}

const CONFIG_ROOT = 'stiefel:config';
const SPEC_PREFIX = 'stiefel:';

/** A variable's value, or why it cannot be known. */
type Value = string | Unknown;
class Unknown {
  constructor(readonly reason: string) {}
}
const isUnknown = (v: unknown): v is Unknown => v instanceof Unknown;

type Tri = boolean | Unknown;

interface MenuItem {
  type: 'menuentry' | 'submenu';
  title: string;
  id: string | null;
  body: Statement[];
  line: number;
  /** Set when the item was defined where we could not follow the script. */
  uncertain: string | null;
  children?: MenuItem[];
}

class Env {
  vars: Map<string, Value>;
  constructor(init?: Map<string, Value>) {
    this.vars = new Map(init);
  }
  clone(): Env {
    return new Env(this.vars);
  }
}

interface Frame {
  env: Env;
  menu: MenuItem[];
  /** Non-null inside a branch or loop we could not decide. */
  uncertain: string | null;
  positional: Value[];
}

const MAX_STEPS = 200_000;
const MAX_DEPTH = 32;

/** Commands that only affect what GRUB shows or loads besides the kernel. */
const HARMLESS = new Set([
  'insmod', 'rmmod', 'echo', 'terminal_output', 'terminal_input', 'terminal', 'clear', 'gfxmode', 'loadfont',
  'background_color', 'background_image', 'save_env', 'export', 'serial', 'sleep', 'play', 'gettext', 'set_background',
  'load_video', 'recordfail', 'savedefault', 'true', 'font', 'fwsetup', 'halt', 'reboot', 'boot', 'keystatus',
  'cutmem', 'badram', 'videoinfo', 'lsfonts', 'menu_color_normal', 'menu_color_highlight', 'setparams', 'return',
  'break', 'continue', 'shift', 'hwmatch', 'tpm2_key_protector_init', 'cryptomount', 'devicetree', 'fakebios',
]);
/** Commands whose success we cannot predict when used as a condition. */
const PREDICATES_UNKNOWN = new Set(['loadfont', 'hwmatch', 'background_color', 'keystatus', 'cryptomount', 'search', 'probe', 'regexp', 'cpuid', 'smbios']);
/** Entry commands that load something other than a Linux kernel we can kexec. */
const NON_LINUX = new Set(['linux16', 'initrd16', 'chainloader', 'multiboot', 'multiboot2', 'knetbsd', 'kfreebsd', 'kopenbsd', 'appleloader', 'xnu_kernel', 'xnu_kernel64', 'legacy_kernel', 'fwsetup', 'bsd']);

export class GrubEvaluator {
  steps = 0;
  depth = 0;
  readonly notes: string[] = [];
  readonly functions = new Map<string, Statement[]>();
  usesBlscfg = false;
  sourceDepth = 0;
  aborted: string | null = null;

  constructor(readonly ctx: GrubContext) {}

  rootValue(v: Value | undefined): GrubRoot | Unknown {
    if (isUnknown(v)) return v;
    if (v === undefined || v === '' || v === CONFIG_ROOT) return { kind: 'config' };
    if (v.startsWith(SPEC_PREFIX)) {
      const rest = v.slice(SPEC_PREFIX.length);
      const colon = rest.indexOf(':');
      const kind = rest.slice(0, colon) as GrubRootSpec['kind'];
      return { kind, value: rest.slice(colon + 1) } as GrubRootSpec;
    }
    return { kind: 'device', value: v.replace(/^\((.*)\)$/, '$1') };
  }

  /** Splits `(dev)/path` into the device and path; no device means $root. */
  resolvePath(frame: Frame, raw: string): { root: GrubRoot; path: string } | Unknown {
    const m = /^\(([^)]*)\)(.*)$/.exec(raw);
    if (m) {
      const dev = m[1]!;
      const rootVal = frame.env.vars.get('root');
      if (typeof rootVal === 'string' && (rootVal === dev || rootVal.replace(/^\((.*)\)$/, '$1') === dev)) {
        const r = this.rootValue(rootVal);
        return isUnknown(r) ? r : { root: r, path: m[2] || '/' };
      }
      const r = this.rootValue(dev);
      return isUnknown(r) ? r : { root: r, path: m[2] || '/' };
    }
    const r = this.rootValue(frame.env.vars.get('root'));
    return isUnknown(r) ? r : { root: r, path: raw };
  }

  /** Expands a word to fields: unquoted variables split on blanks, quoted ones do not. */
  expand(frame: Frame, word: Word): string[] | Unknown {
    const fields: string[] = [];
    let cur = '';
    let have = false;
    for (const part of word) {
      if ('text' in part) {
        cur += part.text;
        have = true;
        continue;
      }
      const v = this.variable(frame, part.variable);
      if (isUnknown(v)) return v;
      if (part.quoted) {
        cur += v;
        have = true;
        continue;
      }
      const pieces = v.split(/[ \t\n]+/);
      pieces.forEach((p, k) => {
        if (k > 0) {
          if (have || cur) fields.push(cur);
          cur = '';
          have = false;
        }
        if (p) {
          cur += p;
          have = true;
        }
      });
    }
    if (have || cur) fields.push(cur);
    // A word made only of quotes ("") is one empty field.
    if (fields.length === 0 && word.some((p) => p.quoted)) fields.push('');
    return fields;
  }

  expandAll(frame: Frame, words: Word[]): string[] | Unknown {
    const out: string[] = [];
    for (const w of words) {
      const f = this.expand(frame, w);
      if (isUnknown(f)) return f;
      out.push(...f);
    }
    return out;
  }

  variable(frame: Frame, name: string): Value {
    if (/^[0-9]+$/.test(name)) return frame.positional[Number(name) - 1] ?? '';
    if (name === '@' || name === '*') {
      const bad = frame.positional.find(isUnknown);
      return bad ?? (frame.positional as string[]).join(' ');
    }
    if (name === '#') return String(frame.positional.length);
    if (name === '?') return '0';
    return frame.env.vars.get(name) ?? '';
  }

  assign(frame: Frame, name: string, value: Value): void {
    frame.env.vars.set(name, frame.uncertain && !isUnknown(value) ? new Unknown(frame.uncertain) : value);
  }

  tick(): boolean {
    this.steps++;
    if (this.steps > MAX_STEPS) {
      this.aborted ??= 'the script runs too long to evaluate';
      return false;
    }
    return true;
  }

  run(frame: Frame, statements: Statement[]): Tri {
    let status: Tri = true;
    for (const st of statements) {
      if (!this.tick() || this.aborted) return new Unknown(this.aborted ?? 'aborted');
      status = this.exec(frame, st);
    }
    return status;
  }

  exec(frame: Frame, st: Statement): Tri {
    switch (st.kind) {
      case 'function':
        if (st.name) this.functions.set(st.name, st.body);
        return true;
      case 'menu':
        return this.defineMenu(frame, st);
      case 'loop': {
        // Loops are rare in grub.cfg; anything they touch becomes unknown.
        const inner: Frame = { ...frame, uncertain: `a loop (line ${st.line}: ${st.text}) that is not evaluated` };
        this.run(inner, st.body);
        return new Unknown(inner.uncertain!);
      }
      case 'if':
        return this.execIf(frame, st);
      case 'command':
        return this.command(frame, st.words, st.line);
    }
  }

  execIf(frame: Frame, st: Extract<Statement, { kind: 'if' }>): Tri {
    for (let k = 0; k < st.clauses.length; k++) {
      const clause = st.clauses[k]!;
      const cond = this.run(frame, clause.condition);
      if (cond === true) return this.run(frame, clause.body);
      if (cond === false) continue;
      // Undecidable: run this branch and all the rest, each on its own copy
      // of the environment, and keep only what they agree on.
      const reason = `\`${st.text}\` (line ${st.line}) cannot be evaluated: ${cond.reason}`;
      const branches = [clause.body, ...st.clauses.slice(k + 1).map((c) => [...c.condition, ...c.body]), st.otherwise ?? []];
      const envs = branches.map((body) => {
        const env = frame.env.clone();
        this.run({ ...frame, env, uncertain: frame.uncertain ?? reason }, body);
        return env;
      });
      this.mergeEnvs(frame.env, envs, reason);
      return new Unknown(reason);
    }
    return st.otherwise ? this.run(frame, st.otherwise) : true;
  }

  mergeEnvs(target: Env, envs: Env[], reason: string): void {
    const names = new Set<string>();
    for (const e of envs) for (const k of e.vars.keys()) names.add(k);
    for (const name of names) {
      const values = envs.map((e) => e.vars.get(name));
      const first = values[0];
      const same = values.every((v) => v === first || (typeof v === 'string' && typeof first === 'string' && v === first));
      const before = target.vars.get(name);
      if (same && first !== undefined && !isUnknown(first)) target.vars.set(name, first);
      else if (values.some((v) => v !== before)) target.vars.set(name, new Unknown(reason));
    }
  }

  defineMenu(frame: Frame, st: Extract<Statement, { kind: 'menu' }>): Tri {
    const args = this.expandAll(frame, st.args);
    let title = '';
    let id: string | null = null;
    if (isUnknown(args)) {
      title = st.args.map((w) => literal(w) ?? '$…').join(' ');
    } else {
      for (let k = 0; k < args.length; k++) {
        const a = args[k]!;
        if (a === '--id') id = args[++k] ?? null;
        else if (a.startsWith('--id=')) id = a.slice(5);
        else if (a === '--class' || a === '--users' || a === '--hotkey' || a === '--source') k++;
        else if (a.startsWith('--')) continue;
        else if (!title) title = a;
      }
    }
    const item: MenuItem = { type: st.type, title, id, body: st.body, line: st.line, uncertain: frame.uncertain };
    if (isUnknown(args)) item.uncertain ??= `its title depends on a value that cannot be known: ${args.reason}`;
    frame.menu.push(item);
    return true;
  }

  command(frame: Frame, words: Word[], line: number): Tri {
    if (words.length === 0) return true;
    const nameWord = literal(words[0]);
    // `name=value` assignments.
    if (nameWord !== null && /^[A-Za-z_][A-Za-z0-9_]*=/.test(nameWord) && words[0]!.length >= 1) {
      const eq = nameWord.indexOf('=');
      this.assign(frame, nameWord.slice(0, eq), nameWord.slice(eq + 1));
      return true;
    }
    const first = words[0]!;
    if (first[0] && 'text' in first[0] && /^[A-Za-z_][A-Za-z0-9_]*=/.test(first[0].text) && nameWord === null) {
      const text = first[0].text;
      const eq = text.indexOf('=');
      const valueWord: Word = [{ text: text.slice(eq + 1), quoted: first[0].quoted }, ...first.slice(1)];
      const value = this.expand(frame, valueWord);
      this.assign(frame, text.slice(0, eq), isUnknown(value) ? value : value.join(' '));
      return true;
    }
    const fnByName = nameWord !== null ? this.functions.get(nameWord) : undefined;
    if (fnByName) {
      // Arguments that cannot be known stay unknown inside the function.
      const positional: Value[] = [];
      for (const w of words.slice(1)) {
        const f = this.expand(frame, w);
        if (isUnknown(f)) positional.push(f);
        else positional.push(...f);
      }
      return this.callFunction(frame, fnByName, positional);
    }
    const expanded = this.expandAll(frame, words);
    if (isUnknown(expanded)) {
      // The command itself depends on an unknown value.
      const name = nameWord ?? '';
      if (name === 'set' || name === 'search') {
        const target = name === 'set' ? literal(words[1])?.split('=')[0] : this.searchTarget(words);
        if (target) frame.env.vars.set(target, expanded);
      }
      return expanded;
    }
    const [name, ...args] = expanded as [string, ...string[]];
    switch (name) {
      case 'set': {
        if (args.length === 0) return true;
        const a = args.join(' ');
        const eq = a.indexOf('=');
        if (eq < 0) return true;
        this.assign(frame, a.slice(0, eq), a.slice(eq + 1));
        return true;
      }
      case 'unset':
        for (const a of args) this.assign(frame, a, '');
        return true;
      case 'load_env':
        return this.loadEnv(frame, args);
      case 'search':
      case 'search.fs_uuid':
      case 'search.fs_label':
      case 'search.file':
        return this.search(frame, name, args);
      case '[':
      case 'test':
        return this.test(frame, name === '[' ? (args[args.length - 1] === ']' ? args.slice(0, -1) : args) : args);
      case 'false':
        return false;
      case 'true':
        return true;
      case 'blscfg':
        this.usesBlscfg = true;
        return true;
      case 'source':
      case '.':
        return this.source(frame, args[0] ?? '', line);
      case 'configfile':
        return new Unknown(`\`configfile ${args.join(' ')}\` (line ${line}) replaces the menu and is not followed`);
      default:
        break;
    }
    const fn = this.functions.get(name);
    if (fn) return this.callFunction(frame, fn, args);
    // Commands that store a result in a variable we cannot compute.
    const setArg = args.find((a) => a.startsWith('--set'));
    if (setArg) {
      const target = setArg.includes('=') ? setArg.slice(setArg.indexOf('=') + 1) : args[args.indexOf(setArg) + 1];
      if (target) frame.env.vars.set(target, new Unknown(`\`${name}\` (line ${line}) sets it at boot time`));
    }
    if (PREDICATES_UNKNOWN.has(name)) return new Unknown(`\`${name}\` succeeds or fails only on the real machine`);
    if (HARMLESS.has(name)) return true;
    return new Unknown(`unknown command \`${name}\``);
  }

  callFunction(frame: Frame, body: Statement[], args: Value[]): Tri {
    if (this.depth >= MAX_DEPTH) return new Unknown('functions nest too deep');
    this.depth++;
    const saved = frame.positional;
    frame.positional = args;
    const r = this.run(frame, body);
    frame.positional = saved;
    this.depth--;
    return r;
  }

  searchTarget(words: Word[]): string | null {
    for (let k = 1; k < words.length; k++) {
      const w = literal(words[k]);
      if (w?.startsWith('--set=')) return w.slice(6);
      if (w === '--set' || w === '-s') return literal(words[k + 1]) ?? 'root';
    }
    return null;
  }

  search(frame: Frame, cmd: string, args: string[]): Tri {
    let kind: GrubRootSpec['kind'] = cmd === 'search.fs_label' ? 'label' : cmd === 'search.file' ? 'file' : 'fs-uuid';
    let explicitKind = cmd !== 'search';
    let target: string | null = cmd === 'search' ? null : 'root';
    const rest: string[] = [];
    for (let k = 0; k < args.length; k++) {
      const a = args[k]!;
      if (a === '--fs-uuid' || a === '-u') (kind = 'fs-uuid'), (explicitKind = true);
      else if (a === '--label' || a === '-l') (kind = 'label'), (explicitKind = true);
      else if (a === '--file' || a === '-f') (kind = 'file'), (explicitKind = true);
      else if (a.startsWith('--set=')) target = a.slice(6);
      else if (a === '--set' || a === '-s') target = 'root';
      else if (a.startsWith('--hint') || a === '-h') {
        if (!a.includes('=') && (a === '--hint' || a === '-h')) k++;
      } else if (a.startsWith('-')) continue;
      else rest.push(a);
    }
    if (!explicitKind) kind = 'file';
    const key = rest[rest.length - 1];
    if (!key) return false;
    // grub searches all devices; the first match wins. Which partition that
    // is, is decided when the files are looked up (src/boot-entries/discover.ts).
    if (target) this.assign(frame, target, `${SPEC_PREFIX}${kind}:${key}`);
    return true;
  }

  loadEnv(frame: Frame, args: string[]): Tri {
    let env: ReadonlyMap<string, string> | undefined = this.ctx.grubEnv;
    const fIdx = args.findIndex((a) => a === '-f' || a === '--file');
    let names = args.filter((a) => !a.startsWith('-'));
    if (fIdx >= 0) {
      const file = args[fIdx + 1] ?? '';
      names = names.filter((n) => n !== file);
      const resolved = this.resolvePath(frame, file);
      const text = isUnknown(resolved) ? undefined : this.ctx.readFile?.(resolved.root, resolved.path);
      env = text === undefined ? undefined : parseGrubEnv(text).vars;
    }
    if (!env) return false;
    for (const [k, v] of env) if (names.length === 0 || names.includes(k)) this.assign(frame, k, v);
    return true;
  }

  source(frame: Frame, file: string, line: number): Tri {
    const resolved = this.resolvePath(frame, file);
    if (isUnknown(resolved)) return resolved;
    const text = this.ctx.readFile?.(resolved.root, resolved.path);
    if (text === undefined) {
      const ex = this.ctx.exists?.(resolved.root, resolved.path, 'f');
      if (ex === false) return false;
      return new Unknown(`\`source ${file}\` (line ${line}): the file cannot be read`);
    }
    if (this.sourceDepth >= 8) return new Unknown('`source` nests too deep');
    this.sourceDepth++;
    const { statements, issues } = parseGrubScript(text);
    for (const i of issues) this.notes.push(`${file} line ${i.line}: ${i.message}`);
    const r = this.run(frame, statements);
    this.sourceDepth--;
    return r;
  }

  /** test / [ with GRUB's operators; three-valued. */
  test(frame: Frame, args: string[]): Tri {
    let pos = 0;
    const fileTest = (op: string, p: string): Tri => {
      const resolved = this.resolvePath(frame, p);
      if (isUnknown(resolved)) return resolved;
      const r = this.ctx.exists?.(resolved.root, resolved.path, op as 'e' | 'f' | 'd' | 's');
      return r === undefined ? new Unknown(`whether ${p} exists is not known here`) : r;
    };
    const and = (a: Tri, b: Tri): Tri => (a === false || b === false ? false : isUnknown(a) ? a : isUnknown(b) ? b : true);
    const or = (a: Tri, b: Tri): Tri => (a === true || b === true ? true : isUnknown(a) ? a : isUnknown(b) ? b : false);
    const not = (a: Tri): Tri => (isUnknown(a) ? a : !a);
    const primary = (): Tri => {
      const a = args[pos];
      if (a === undefined) return false;
      if (a === '!') {
        pos++;
        return not(primary());
      }
      if (a === '(') {
        pos++;
        const r = orExpr();
        if (args[pos] === ')') pos++;
        return r;
      }
      const b = args[pos + 1];
      const c = args[pos + 2];
      if (b !== undefined && c !== undefined && BINARY.has(b)) {
        pos += 3;
        return binary(a, b, c);
      }
      if (b !== undefined && /^-[nzefds]$/.test(a) && !(c !== undefined && BINARY.has(c))) {
        pos += 2;
        if (a === '-n') return b.length > 0;
        if (a === '-z') return b.length === 0;
        return fileTest(a.slice(1), b);
      }
      pos++;
      return a.length > 0;
    };
    const andExpr = (): Tri => {
      let r = primary();
      while (args[pos] === '-a') {
        pos++;
        r = and(r, primary());
      }
      return r;
    };
    const orExpr = (): Tri => {
      let r = andExpr();
      while (args[pos] === '-o') {
        pos++;
        r = or(r, andExpr());
      }
      return r;
    };
    if (args.length === 0) return false;
    return orExpr();
  }

  /** Runs an entry's body and collects its kernel, initrds and command line. */
  evaluateEntry(item: MenuItem, base: Env): { linux?: { path: string; root: GrubRoot }; initrds: { path: string; root: GrubRoot }[]; cmdline: string; problem: string | null; nonLinux: string | null } {
    const env = base.clone();
    env.vars.set('chosen', item.title);
    const frame: Frame = { env, menu: [], uncertain: null, positional: [] };
    const out: ReturnType<GrubEvaluator['evaluateEntry']> = { initrds: [], cmdline: '', problem: null, nonLinux: null };
    const visit = (statements: Statement[], fr: Frame): void => {
      for (const st of statements) {
        if (!this.tick()) {
          out.problem ??= this.aborted;
          return;
        }
        if (st.kind === 'command') {
          const head = literal(st.words[0]);
          if (head === 'linux' || head === 'linuxefi' || head === 'initrd' || head === 'initrdefi') {
            const args = this.expandAll(fr, st.words.slice(1));
            if (isUnknown(args)) {
              out.problem ??= `its \`${head}\` line (line ${st.line}) uses a value that cannot be known: ${args.reason}`;
              continue;
            }
            if (fr.uncertain) {
              out.problem ??= `its \`${head}\` line (line ${st.line}) runs only if ${fr.uncertain}`;
              continue;
            }
            const files = head.startsWith('linux') ? args.slice(0, 1) : args;
            const resolved = files.map((f) => this.resolvePath(fr, f));
            const bad = resolved.find(isUnknown);
            if (bad) {
              out.problem ??= `the device of its \`${head}\` file cannot be known: ${bad.reason}`;
              continue;
            }
            const refs = resolved as { root: GrubRoot; path: string }[];
            if (head.startsWith('linux')) {
              if (!refs[0]) {
                out.problem ??= `its \`${head}\` line names no kernel`;
                continue;
              }
              out.linux = refs[0];
              out.cmdline = args.slice(1).join(' ');
            } else out.initrds = refs;
            continue;
          }
          if (head !== null && NON_LINUX.has(head)) {
            out.nonLinux ??= head;
            continue;
          }
          const r = this.command(fr, st.words, st.line);
          void r;
          continue;
        }
        if (st.kind === 'if') {
          // Re-implement the branch choice so linux/initrd lines inside are seen.
          let decided = false;
          for (let k = 0; k < st.clauses.length && !decided; k++) {
            const clause = st.clauses[k]!;
            const cond = this.run(fr, clause.condition);
            if (cond === true) {
              visit(clause.body, fr);
              decided = true;
            } else if (cond !== false) {
              const reason = `\`${st.text}\` (line ${st.line}) cannot be evaluated: ${cond.reason}`;
              const rest = [clause.body, ...st.clauses.slice(k + 1).map((c) => [...c.condition, ...c.body]), st.otherwise ?? []];
              const envs = rest.map((body) => {
                const e = fr.env.clone();
                visit(body, { ...fr, env: e, uncertain: fr.uncertain ?? reason });
                return e;
              });
              this.mergeEnvs(fr.env, envs, reason);
              decided = true;
            }
          }
          if (!decided && st.otherwise) visit(st.otherwise, fr);
          continue;
        }
        this.exec(fr, st);
      }
    };
    visit(item.body, frame);
    return out;
  }
}

const BINARY = new Set(['=', '==', '!=', '<', '>', '<=', '>=', '-eq', '-ne', '-lt', '-le', '-gt', '-ge', '-pgt', '-plt', '-nt', '-ot', '-sgt', '-slt']);

function binary(a: string, op: string, b: string): Tri {
  const num = (s: string): number => {
    const m = /^-?\d+/.exec(s);
    return m ? Number(m[0]) : 0;
  };
  switch (op) {
    case '=':
    case '==':
      return a === b;
    case '!=':
      return a !== b;
    case '<':
      return a < b;
    case '>':
      return a > b;
    case '<=':
      return a <= b;
    case '>=':
      return a >= b;
    case '-eq':
      return num(a) === num(b);
    case '-ne':
      return num(a) !== num(b);
    case '-lt':
      return num(a) < num(b);
    case '-le':
      return num(a) <= num(b);
    case '-gt':
      return num(a) > num(b);
    case '-ge':
      return num(a) >= num(b);
    default:
      return new Unknown(`the test operator ${op} is not evaluated`);
  }
}

/**
 * GRUB's environment block (grubenv): "# GRUB Environment Block", then
 * `name=value` lines, padded with '#' to 1024 bytes. A backslash escapes the
 * next character (GRUB writes `\\` and `\` before a newline).
 */
export function parseGrubEnv(text: string): { vars: Map<string, string>; valid: boolean } {
  const vars = new Map<string, string>();
  const valid = text.startsWith('# GRUB Environment Block');
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    vars.set(line.slice(0, eq), line.slice(eq + 1).replace(/\\(.)/g, '$1'));
  }
  return { vars, valid };
}

export interface GrubCandidateExtra {
  /** `blscfg` was called: the entries come from loader/entries. */
  usesBlscfg: boolean;
  /** The raw `default` after the script ran (for blscfg: a BLS id). */
  defaultValue: string | null;
}

/** Evaluates grub.cfg text into candidates (default first is NOT applied here; `isDefault` marks it). */
export function parseGrubConfig(text: string, ctx: GrubContext): ParseResult & GrubCandidateExtra {
  const what = ctx.what ?? `${ctx.prefix}/grub.cfg`;
  const result: ParseResult & GrubCandidateExtra = { candidates: [], skipped: [], notes: [], usesBlscfg: false, defaultValue: null };
  if (text.includes('\0')) {
    result.skipped.push({ source: 'grub', what, reason: 'not a text file' });
    return result;
  }
  const { statements, issues } = parseGrubScript(text);
  for (const i of issues.slice(0, 10)) result.notes.push(`${what} line ${i.line}: ${i.message}`);
  const ev = new GrubEvaluator(ctx);
  const vars = new Map<string, Value>([
    ['prefix', `(${CONFIG_ROOT})${ctx.prefix}`],
    ['root', CONFIG_ROOT],
    ['cmdpath', `(${CONFIG_ROOT})${ctx.prefix}`],
    ['config_directory', `(${CONFIG_ROOT})${ctx.prefix}`],
    ['config_file', `(${CONFIG_ROOT})${ctx.prefix}/grub.cfg`],
    ['feature_menuentry_id', 'y'],
    ['feature_platform_search_hint', 'y'],
    ['feature_all_video_module', 'y'],
    ['feature_default_font_path', 'y'],
    ['feature_timeout_style', 'y'],
    ['feature_chainloader_bpb', 'y'],
    ['feature_ntldr', 'y'],
    ['feature_200_final', 'y'],
    ['grub_cpu', 'x86_64'],
    ['grub_platform', ctx.platform ?? new Unknown('whether the laptop boots grub by EFI or BIOS is not known')],
  ]);
  const env = new Env(vars);
  const top: Frame = { env, menu: [], uncertain: null, positional: [] };
  ev.run(top, statements);
  result.notes.push(...ev.notes);
  result.usesBlscfg = ev.usesBlscfg;
  const def = env.vars.get('default');
  result.defaultValue = typeof def === 'string' && def !== '' ? def : null;
  if (ev.aborted) result.notes.push(`${what}: ${ev.aborted}; entries after that point are not known`);

  // Build the menu tree: submenu bodies run when opened, in the final environment.
  const expandSubmenus = (items: MenuItem[], depth: number): void => {
    for (const item of items) {
      if (item.type !== 'submenu' || depth > 8) continue;
      const frame: Frame = { env: env.clone(), menu: [], uncertain: item.uncertain, positional: [] };
      ev.run(frame, item.body);
      item.children = frame.menu;
      expandSubmenus(item.children, depth + 1);
    }
  };
  expandSubmenus(top.menu, 0);

  // Which item is the default: GRUB's `default` is an index, a title or an
  // id, with '>' separating submenu levels; unset or invalid means entry 0.
  let defaultPath: MenuItem[] = [];
  const defaultNote = (msg: string) => result.notes.push(`${what}: ${msg}`);
  if (isUnknown(def)) {
    defaultNote(`the default entry cannot be known (${def.reason}); the first entry is used`);
  } else if (def && !ev.usesBlscfg) {
    let level: MenuItem[] | undefined = top.menu;
    for (const part of def.split('>')) {
      if (!level) break;
      const item: MenuItem | undefined = /^\d+$/.test(part) ? level[Number(part)] : level.find((i) => i.id === part || i.title === part);
      if (!item) {
        defaultNote(`default "${def}" names no menu entry; GRUB then boots the first entry`);
        defaultPath = [];
        break;
      }
      defaultPath.push(item);
      level = item.children;
    }
  }
  while (defaultPath.length && defaultPath[defaultPath.length - 1]!.type === 'submenu') {
    const sub: MenuItem = defaultPath[defaultPath.length - 1]!;
    const firstChild: MenuItem | undefined = sub.children?.[0];
    if (!firstChild) break;
    defaultPath.push(firstChild);
  }
  if (defaultPath.length === 0) {
    // First entry, descending into a first submenu.
    let level: MenuItem[] | undefined = top.menu;
    while (level && level[0]) {
      defaultPath.push(level[0]);
      level = level[0].type === 'submenu' ? level[0].children : undefined;
    }
  }
  const defaultItem = defaultPath[defaultPath.length - 1];

  const walk = (items: MenuItem[], titles: string[]): void => {
    for (const item of items) {
      const label = [...titles, item.title].join(' > ');
      if (item.type === 'submenu') {
        if (item.uncertain) result.skipped.push({ source: 'grub', what: `${what}: submenu "${label}"`, reason: `defined only if ${item.uncertain}` });
        walk(item.children ?? [], [...titles, item.title]);
        continue;
      }
      const skip = (reason: string): void => {
        result.skipped.push({ source: 'grub', what: `${what}: "${label}"`, reason });
      };
      if (item.uncertain) {
        skip(`defined only if ${item.uncertain}`);
        continue;
      }
      const e = ev.evaluateEntry(item, env);
      if (e.problem) {
        skip(e.problem);
        continue;
      }
      if (!e.linux) {
        skip(e.nonLinux ? `not a Linux kernel entry (uses ${e.nonLinux})` : 'has no `linux` line');
        continue;
      }
      const roots = [e.linux.root, ...e.initrds.map((i) => i.root)];
      const r0 = roots[0]!;
      if (roots.some((r) => JSON.stringify(r) !== JSON.stringify(r0))) {
        skip('its kernel and initrds are on different devices, which we do not follow');
        continue;
      }
      const version = /vmlinu[xz]-(.+)$/.exec(e.linux.path)?.[1] ?? /Linux ([^\s)]+)/.exec(item.title)?.[1] ?? null;
      const candidate: Candidate = {
        id: item.id ?? label,
        title: label,
        version,
        kernel: { path: normalizeBootPath(e.linux.path) },
        initrds: e.initrds.map((i) => ({ path: normalizeBootPath(i.path) })),
        cmdline: e.cmdline.split(/\s+/).filter(Boolean).join(' '),
        source: 'grub',
        isDefault: item === defaultItem,
      };
      if (r0.kind !== 'config') candidate.root = r0;
      result.candidates.push(candidate);
    }
  };
  walk(top.menu, []);
  if (defaultItem && !result.candidates.some((c) => c.isDefault) && result.candidates.length) {
    defaultNote(`its default entry "${defaultItem.title}" is not usable; the first usable entry is used instead`);
  }
  return result;
}

export type { Skipped };
