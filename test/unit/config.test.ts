import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError,
  configPath,
  configJsonSchema,
  configTemplate,
  loadConfig,
  parseConfigText,
  validateConfig,
  DEFAULT_CONFIG_PATH,
} from '../../src/config';

const F = '/etc/stiefelsystem/config.yaml';

function err(text: string): ConfigError {
  try {
    parseConfigText(text, F);
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e;
  }
  assert.fail(`no error for:\n${text}`);
}

test('an empty file gives every default, frozen', () => {
  const c = parseConfigText('', F);
  assert.equal(c.secret, '/etc/stiefelsystem/secret');
  assert.equal(c.discovery.port, 61570);
  assert.equal(c.discovery.retryIntervalMs, 50);
  assert.equal(c.payload.port, 4644);
  assert.equal(c.server.nbd.port, 10809);
  assert.equal(c.server.nbd.export, 'disk');
  assert.equal(c.server.boot, undefined);
  assert.equal(c.network.interfaces, 'all');
  assert.equal(c.client.linkInterface, 'stiefellink');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.discovery) && Object.isFrozen(c.network.exclude));
  assert.throws(() => {
    (c.discovery as { port: number }).port = 1;
  }, TypeError);
});

test('the template that init writes parses and equals the defaults', () => {
  const text = configTemplate({ secret: 'secret' });
  const fromTemplate = parseConfigText(text, F);
  const defaults = validateConfig({}, F);
  assert.deepEqual(fromTemplate, defaults);
  // Every top-level section is documented.
  for (const k of ['secret:', 'network:', 'discovery:', 'payload:', 'server:', 'client:']) assert.match(text, new RegExp(`^${k}`, 'm'));
  // And the commented-out example boot section is valid once uncommented.
  const uncommented = text.replace(/^  # (boot:|  kernel:|  initrd:|  cmdline:|  family:)/gm, '  $1');
  const c = parseConfigText(uncommented.replace('root=UUID=... ro quiet', 'root=UUID=1234 ro quiet'), F);
  assert.deepEqual(c.server.boot, { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'root=UUID=1234 ro quiet', family: 'initramfs-tools' });
});

test('relative paths are relative to the config file', () => {
  const c = parseConfigText('secret: keys/s\nserver:\n  disk: disk.img\n  boot: {kernel: k, initrd: /abs/i, cmdline: "a  b"}\n', '/srv/x/c.yaml');
  assert.equal(c.secret, '/srv/x/keys/s');
  assert.equal(c.server.disk, '/srv/x/disk.img');
  assert.equal(c.server.boot?.kernel, '/srv/x/k');
  assert.equal(c.server.boot?.initrd, '/abs/i');
  assert.equal(c.server.boot?.cmdline, 'a b');
});

test('errors name the key, the file and what is allowed', () => {
  let e = err('discovery:\n  port: 70000\n');
  assert.equal(e.message, `config ${F}: discovery.port must be an integer from 1 to 65535, not 70000`);
  assert.equal(e.key, 'discovery.port');
  e = err('discovery:\n  port: "abc"\n');
  assert.equal(e.message, `config ${F}: discovery.port must be an integer from 1 to 65535, not 'abc'`);
  e = err('server:\n  boot: {kernel: /k, initrd: /i, family: gentoo}\n');
  assert.equal(e.message, `config ${F}: server.boot.family must be one of initramfs-tools, dracut, mkinitcpio, not 'gentoo'`);
  e = err('server:\n  boot: {initrd: /i}\n');
  assert.match(e.message, /server\.boot\.kernel must be the path of the laptop OS kernel/);
  e = err('network:\n  interfaces: [eth0, "this-name-is-too-long"]\n');
  assert.match(e.message, /network\.interfaces\[1\] must be an interface name/);
  e = err('discovery: 5\n');
  assert.equal(e.message, `config ${F}: discovery must be a mapping, not 5`);
  e = err('server:\n  boot: {kernel: /k, initrd: /i, cmdline: "say \\"hi\\""}\n');
  assert.match(e.message, /server\.boot\.cmdline must be the kernel command line, without quotes or backslashes/);
  e = err('discovery:\n  ipv4_broadcast: yes please\n');
  assert.match(e.message, /discovery\.ipv4_broadcast must be true or false/);
});

test('an unknown key is refused, listing the allowed ones', () => {
  const e = err('discovery:\n  prot: 1\n');
  assert.equal(e.message, `config ${F}: unknown key 'discovery.prot' (allowed here: ipv4_broadcast, max_clock_skew_s, port, retry_interval_ms, timeout_s)`);
  assert.match(err('client:\n  stall_timeout_s: 0\n').message, /client\.stall_timeout_s must be an integer from 1 to 3600, not 0/);
  assert.match(err('sekret: x\n').message, /unknown key 'sekret'/);
});

test('YAML syntax errors and non-mappings name the file and the line', () => {
  assert.match(err('a: [1\n').message, new RegExp(`^config ${F} line \\d+ column \\d+: invalid YAML`));
  assert.match(err('secret: a\nsecret: b\n').message, /invalid YAML: Map keys must be unique/);
  assert.match(err('- 1\n- 2\n').message, /must be a YAML mapping/);
});

test('loadConfig reads the file and explains a missing one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-config-'));
  try {
    const p = join(dir, 'c.yaml');
    writeFileSync(p, 'payload: {port: 4645}\n');
    assert.equal((await loadConfig(p)).payload.port, 4645);
    await assert.rejects(loadConfig(join(dir, 'none.yaml')), (e: Error) => /does not exist: run 'stiefelctl init --config/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the config path: flag, then STIEFEL_CONFIG, then the default', () => {
  assert.equal(configPath('x.yaml', { STIEFEL_CONFIG: '/e.yaml' }, '/w'), '/w/x.yaml');
  assert.equal(configPath(undefined, { STIEFEL_CONFIG: '/e.yaml' }, '/w'), '/e.yaml');
  assert.equal(configPath(undefined, {}, '/w'), DEFAULT_CONFIG_PATH);
});

/** Every dotted key of a JSON Schema's objects, leaves only. */
function schemaKeys(schema: { properties?: Record<string, unknown> }, prefix = ''): string[] {
  return Object.entries(schema.properties ?? {}).flatMap(([k, v]) => {
    const s = v as { type?: string; properties?: Record<string, unknown> };
    return s.type === 'object' ? schemaKeys(s, `${prefix}${k}.`) : [`${prefix}${k}`];
  });
}

test('one declaration: the template, the JSON Schema and the typed config name the same settings', () => {
  const schema = configJsonSchema() as { properties: Record<string, unknown> };
  const keys = schemaKeys(schema);
  assert.ok(keys.length >= 25, keys.join(' '));
  const defaults = validateConfig({}, F) as unknown as Record<string, unknown>;
  const template = configTemplate({ secret: 'secret' });
  const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  for (const key of keys) {
    // The typed config has the key (camelCase), possibly undefined when the setting is optional.
    const parts = key.split('.');
    const parent = parts.slice(0, -1).reduce<Record<string, unknown> | undefined>((o, p) => o?.[camel(p)] as Record<string, unknown> | undefined, defaults);
    if (parent !== undefined) assert.ok(camel(parts.at(-1)!) in parent, `${key} in the typed config`);
    // The template shows it, set or commented out, under its section.
    assert.match(template, new RegExp(`^ *(# *)?${parts.at(-1)}:`, 'm'), `${key} in the template`);
    // The schema describes it.
    const leaf = parts.reduce<{ properties?: Record<string, unknown> } & Record<string, unknown>>((o, p) => o.properties![p] as never, schema as never);
    assert.equal(typeof leaf.description, 'string', `${key} has a description`);
  }
  // Defaults in the schema are the defaults of the typed config.
  const discovery = (schema.properties.discovery as { properties: Record<string, { default?: unknown }> }).properties;
  assert.equal(discovery.port!.default, 61570);
  assert.equal(discovery.max_clock_skew_s!.default, 600);
});

test('the JSON Schema refuses what the reader refuses: ranges, enums, patterns, unknown keys', () => {
  const schema = configJsonSchema() as { properties: Record<string, { properties: Record<string, Record<string, unknown>>; additionalProperties: boolean }> };
  const port = schema.properties.discovery!.properties.port!;
  assert.deepEqual([port.type, port.minimum, port.maximum], ['integer', 1, 65535]);
  assert.deepEqual(schema.properties.server!.properties.attach!.enum, ['stiefelsystem', 'family']);
  assert.equal(schema.properties.client!.additionalProperties, false);
  assert.ok(new RegExp(String(schema.properties.client!.properties.link_interface!.pattern)).test('stiefellink'));
  assert.ok(!new RegExp(String(schema.properties.client!.properties.link_interface!.pattern)).test('a/b'));
});

test('an empty interface list says so and names what is allowed', () => {
  assert.equal(err('network:\n  interfaces: []\n').message, `config ${F}: network.interfaces must be 'all' or a non-empty list of interface names, not an empty list`);
});

test('server.disk: a path (relative to the config) or PTUUID= and a partition-table id', () => {
  assert.equal(parseConfigText('server:\n  disk: PTUUID=1B2C3D4E-0000-4111-8222-0123456789AB\n', F).server.disk, 'PTUUID=1b2c3d4e-0000-4111-8222-0123456789ab');
  assert.equal(parseConfigText('server:\n  disk: laptop.img\n', '/srv/c.yaml').server.disk, '/srv/laptop.img');
  assert.match(err('server:\n  disk: PTUUID=xyz\n').message, /server\.disk must be PTUUID= and a partition-table id/);
});

test("client.isos: https alone, or with sha256: or a signed list's sums:; http only with one of the two", () => {
  const H = 'c'.repeat(64);
  const ok = parseConfigText(`client:\n  isos:\n    - https://a/x.iso\n    - "http://a/y.iso sha256:${H}"\n    - "http://a/F.iso sums:http://a/F-CHECKSUM"\n    - "https://a/d.iso sums:https://a/SHA256SUMS"\n`, F);
  assert.equal(ok.client.isos.length, 4);
  assert.match(err('client:\n  isos:\n    - http://a/y.iso\n').message, /client\.isos/);
  assert.match(err('client:\n  isos:\n    - "http://a/y.iso sums:"\n').message, /client\.isos/);
  assert.match(err('client:\n  isos:\n    - "https://a/y.iso md5:abc"\n').message, /client\.isos/);
});
