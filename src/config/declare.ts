// The building blocks of the configuration's one declaration (settings.ts).
// Each setting is declared once, with its YAML key, type, default, check,
// the words of its error message and its documentation; from that one
// declaration come the TypeScript type of the resolved config, the reader
// that validates a parsed file, the commented template that `init` writes,
// and the JSON Schema that editors use for completion. Pure.
import { isAbsolute, resolve } from 'node:path';
import { StiefelError } from '../errors';

export class ConfigError extends StiefelError {
  readonly key: string | undefined;
  constructor(message: string, options: { key?: string; cause?: unknown } = {}) {
    super('E_CONFIG', message, options);
    this.key = options.key;
  }
}

/** Where a value sits: its dotted key, the file (for messages), the directory relative paths start from. */
export interface At {
  key: string;
  file: string;
  base: string;
}

export type JsonSchema = Record<string, unknown>;

/** One declared setting (or section) whose resolved value is a T. */
export interface Setting<T> {
  /** Comment lines above the key in the template; the description in the JSON Schema. */
  readonly doc: string;
  /** Resolves the raw YAML value (undefined or null when absent). */
  read(raw: unknown, at: At): T;
  /**
   * The template's lines for `key`, indented by `indent`: `key: default`, a
   * commented-out example, or a section's block.
   */
  template(key: string, indent: string, ctx: TemplateContext): string[];
  jsonSchema(): JsonSchema;
}

export interface TemplateContext {
  /** Values to write instead of the defaults, by dotted key (`secret`). */
  overrides: ReadonlyMap<string, string>;
  /** The dotted key of this setting. */
  path: string;
  /** Inside a commented-out example block: the example value, no comments. */
  example?: boolean;
}

export type ValueOf<S> = S extends Setting<infer T> ? T : never;

/** snake_case YAML keys become camelCase properties: watch_interval_ms -> watchIntervalMs. */
export type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Head}${Capitalize<CamelCase<Tail>>}` : S;

export type Fields = Record<string, Setting<unknown>>;
export type SectionValue<F extends Fields> = { readonly [K in keyof F & string as CamelCase<K>]: ValueOf<F[K]> };

export function camelCase(key: string): string {
  return key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return value.length === 0 ? 'an empty list' : 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `'${value.length > 60 ? `${value.slice(0, 60)}...` : value}'`;
  return String(value);
}

export function fail(at: At, allowed: string, value: unknown): never {
  throw new ConfigError(`config ${at.file}: ${at.key} must be ${allowed}, not ${describe(value)}`, { key: at.key });
}

const absent = (v: unknown): v is undefined | null => v === undefined || v === null;

/** A YAML scalar as the template writes it: plain where YAML reads it back as the same string. */
export function yamlScalar(value: string | number | boolean): string {
  if (typeof value !== 'string') return String(value);
  return /^[A-Za-z0-9_./][A-Za-z0-9_./ -]*$/.test(value) && !/^(true|false|null|yes|no|on|off|~)$/i.test(value) && !/ $/.test(value) ? value : JSON.stringify(value);
}

function yamlValue(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => yamlScalar(v as string)).join(', ')}]`;
  return yamlScalar(value as string | number | boolean);
}

function comments(doc: string, indent: string): string[] {
  return doc ? doc.split('\n').map((l) => `${indent}# ${l}`.trimEnd()) : [];
}

interface ScalarOptions<T> {
  doc: string;
  /** What the value must be, in the error message ("an integer from 1 to 65535"). */
  allowed: string;
  /** The value when the key is absent; undefined: the setting is optional. */
  default: T;
  /** Shown commented out in the template when there is no default to show. */
  example?: string;
  check(raw: unknown, at: At): T;
  schema: JsonSchema;
}

function scalar<T>(o: ScalarOptions<T>): Setting<T> {
  return {
    doc: o.doc,
    read: (raw, at) => (absent(raw) ? o.default : o.check(raw, at)),
    template(key, indent, ctx) {
      if (ctx.example) return [`${indent}${key}: ${o.example ?? (o.default !== undefined ? yamlValue(o.default) : '...')}`];
      const lines = comments(o.doc, indent);
      const given = ctx.overrides.get(ctx.path);
      if (given !== undefined) lines.push(`${indent}${key}: ${given}`);
      else if (o.default !== undefined) lines.push(`${indent}${key}: ${yamlValue(o.default)}`);
      else lines.push(`${indent}# ${key}: ${o.example ?? '...'}`);
      return lines;
    },
    jsonSchema: () => ({ ...o.schema, description: o.doc.replace(/\n/g, ' '), ...(o.default !== undefined ? { default: o.default } : {}) }),
  };
}

export function int(o: { doc: string; default: number; min: number; max: number }): Setting<number> {
  const allowed = `an integer from ${o.min} to ${o.max}`;
  return scalar({
    doc: o.doc,
    allowed,
    default: o.default,
    check: (v, at) => (typeof v === 'number' && Number.isInteger(v) && v >= o.min && v <= o.max ? v : fail(at, allowed, v)),
    schema: { type: 'integer', minimum: o.min, maximum: o.max },
  });
}

export function bool(o: { doc: string; default: boolean }): Setting<boolean> {
  return scalar({
    doc: o.doc,
    allowed: 'true or false',
    default: o.default,
    check: (v, at) => (typeof v === 'boolean' ? v : fail(at, 'true or false', v)),
    schema: { type: 'boolean' },
  });
}

interface TextOptions {
  doc: string;
  pattern: RegExp;
  allowed: string;
  example?: string;
  /** Applied to the value read (not to the default). */
  normalize?: (v: string) => string;
}

function textCheck(o: TextOptions): (v: unknown, at: At) => string {
  return (v, at) => {
    if (typeof v !== 'string' || !o.pattern.test(v)) fail(at, o.allowed, v);
    return o.normalize ? o.normalize(v) : v;
  };
}

function textSchema(o: TextOptions): JsonSchema {
  return { type: 'string', pattern: o.pattern.source };
}

export function text(o: TextOptions & { default: string }): Setting<string> {
  return scalar({ ...o, check: textCheck(o), schema: textSchema(o) });
}

export function optionalText(o: TextOptions): Setting<string | undefined> {
  return scalar<string | undefined>({ ...o, default: undefined, check: textCheck(o), schema: textSchema(o) });
}

export function oneOf<const V extends string>(values: readonly V[], o: { doc: string; default: V }): Setting<V>;
export function oneOf<const V extends string>(values: readonly V[], o: { doc: string; default: undefined; example: V }): Setting<V | undefined>;
export function oneOf<const V extends string>(values: readonly V[], o: { doc: string; default: V | undefined; example?: V }): Setting<V | undefined> {
  const allowed = `one of ${values.join(', ')}`;
  return scalar<V | undefined>({
    doc: o.doc,
    allowed,
    default: o.default,
    example: o.example,
    check: (v, at) => (typeof v === 'string' && (values as readonly string[]).includes(v) ? (v as V) : fail(at, allowed, v)),
    schema: { type: 'string', enum: values },
  });
}

const PATH_TEXT = /^[^\0]+$/;

function pathCheck(allowed: string): (v: unknown, at: At) => string {
  return (v, at) => {
    if (typeof v !== 'string' || !PATH_TEXT.test(v)) fail(at, allowed, v);
    return isAbsolute(v) ? v : resolve(at.base, v);
  };
}

/** A file path; relative ones are relative to the config file's directory. */
export function path(o: { doc: string; default: string; allowed?: string }): Setting<string> {
  const check = pathCheck(o.allowed ?? 'a file path');
  return {
    ...scalar({ doc: o.doc, allowed: 'a file path', default: o.default, check, schema: { type: 'string', minLength: 1 } }),
    read: (raw, at) => check(absent(raw) ? o.default : raw, at),
  };
}

export function optionalPath(o: { doc: string; example?: string; allowed?: string }): Setting<string | undefined> {
  return scalar<string | undefined>({ doc: o.doc, allowed: 'a file path', default: undefined, example: o.example, check: pathCheck(o.allowed ?? 'a file path'), schema: { type: 'string', minLength: 1 } });
}

/** A path that must be there whenever its section is. */
export function requiredPath(o: { doc: string; example: string; missing: string }): Setting<string> {
  const check = pathCheck('a file path');
  return {
    ...scalar({ doc: o.doc, allowed: 'a file path', default: '', example: o.example, check, schema: { type: 'string', minLength: 1 } }),
    read: (raw, at) => (absent(raw) ? fail(at, o.missing, undefined) : check(raw, at)),
    template: (key, indent, ctx) => [...(ctx.example ? [] : comments(o.doc, indent)), `${indent}${key}: ${o.example}`],
  };
}

export function list(o: { doc: string; default: readonly string[]; item: { pattern: RegExp; allowed: string } }): Setting<readonly string[]> {
  return scalar<readonly string[]>({
    doc: o.doc,
    allowed: `a list of ${o.item.allowed}`,
    default: o.default,
    check: (v, at) => {
      if (!Array.isArray(v)) fail(at, `a list of ${o.item.allowed}`, v);
      return v.map((x, i) => (typeof x === 'string' && o.item.pattern.test(x) ? x : fail({ ...at, key: `${at.key}[${i}]` }, o.item.allowed, x)));
    },
    schema: { type: 'array', items: { type: 'string', pattern: o.item.pattern.source } },
  });
}

/** A setting whose reading, template line and schema are written by hand (a union, say). */
export function custom<T>(o: ScalarOptions<T>): Setting<T> {
  return scalar(o);
}

interface SectionOptions<F extends Fields> {
  doc?: string;
  /** A check across the section's settings, after each was read. */
  check?: (value: SectionValue<F>, at: At, raw: Record<string, unknown>) => void;
}

function keyOf(at: At, name: string): At {
  return { ...at, key: at.key ? `${at.key}.${name}` : name };
}

function readSection<F extends Fields>(fields: F, raw: unknown, at: At, check: SectionOptions<F>['check']): SectionValue<F> {
  if (absent(raw)) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) fail(at, 'a mapping', raw);
  const map = raw as Record<string, unknown>;
  const names = Object.keys(fields);
  for (const k of Object.keys(map)) {
    if (!names.includes(k)) {
      const where = keyOf(at, k).key;
      throw new ConfigError(`config ${at.file}: unknown key '${where}' (allowed here: ${[...names].sort().join(', ')})`, { key: where });
    }
  }
  const out: Record<string, unknown> = {};
  for (const name of names) out[camelCase(name)] = fields[name]!.read(map[name], keyOf(at, name));
  const value = out as SectionValue<F>;
  check?.(value, at, map);
  return value;
}

function sectionSchema(fields: Fields, doc: string | undefined): JsonSchema {
  return {
    type: 'object',
    ...(doc ? { description: doc.replace(/\n/g, ' ') } : {}),
    properties: Object.fromEntries(Object.entries(fields).map(([k, s]) => [k, s.jsonSchema()])),
    additionalProperties: false,
  };
}

function sectionLines(fields: Fields, indent: string, ctx: TemplateContext): string[] {
  const lines: string[] = [];
  for (const [k, s] of Object.entries(fields)) lines.push(...s.template(k, indent, { ...ctx, path: ctx.path ? `${ctx.path}.${k}` : k }));
  return lines;
}

export function section<F extends Fields>(fields: F, o: SectionOptions<F> = {}): Setting<SectionValue<F>> & { readonly fields: F } {
  return {
    fields,
    doc: o.doc ?? '',
    read: (raw, at) => readSection(fields, raw, at, o.check),
    template: (key, indent, ctx) => [...(ctx.example ? [] : comments(o.doc ?? '', indent)), `${indent}${key}:`, ...sectionLines(fields, `${indent}  `, ctx)],
    jsonSchema: () => sectionSchema(fields, o.doc),
  };
}

/** A section that is either there, whole, or absent (undefined); shown commented out in the template. */
export function optionalSection<F extends Fields>(fields: F, o: SectionOptions<F> = {}): Setting<SectionValue<F> | undefined> {
  return {
    doc: o.doc ?? '',
    read: (raw, at) => (absent(raw) ? undefined : readSection(fields, raw, at, o.check)),
    template: (key, indent, ctx) => [
      ...comments(o.doc ?? '', indent),
      `${indent}# ${key}:`,
      ...sectionLines(fields, '  ', { ...ctx, example: true }).map((l) => `${indent}# ${l}`),
    ],
    jsonSchema: () => sectionSchema(fields, o.doc),
  };
}

/** The commented template of a whole declaration (its top-level fields, no indent). */
export function templateOf(fields: Fields, overrides: ReadonlyMap<string, string>): string {
  const out: string[] = [];
  for (const [k, s] of Object.entries(fields)) {
    out.push(...s.template(k, '', { overrides, path: k }), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

export function jsonSchemaOf(fields: Fields, meta: { title: string; id?: string }): JsonSchema {
  return { $schema: 'http://json-schema.org/draft-07/schema#', ...(meta.id ? { $id: meta.id } : {}), title: meta.title, ...sectionSchema(fields, undefined) };
}

export function readTop<F extends Fields>(fields: F, raw: unknown, file: string, base: string, check?: SectionOptions<F>['check']): SectionValue<F> {
  if (!absent(raw) && (typeof raw !== 'object' || Array.isArray(raw))) {
    throw new ConfigError(`config ${file}: the file must be a YAML mapping of keys (${Object.keys(fields).join(', ')}), not ${describe(raw)}`);
  }
  return readSection(fields, raw, { key: '', file, base }, check);
}
