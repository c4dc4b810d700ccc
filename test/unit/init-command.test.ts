import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type MainIO } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands';
import { parseConfigText } from '../../src/config';

function io(argv: string[], cwd: string): MainIO & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { argv, env: {}, cwd, stdout: (t) => out.push(t), stderr: (t) => err.push(t), stderrIsTTY: false, signal: new AbortController().signal, out, err };
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'stf3-init-'));
}

test('init writes a commented config and a 0600 32-byte secret next to it', async () => {
  const dir = tmp();
  try {
    const x = io(['init', '--config', 'etc/config.yaml'], dir);
    assert.equal(await main(x, COMMANDS), 0, x.err.join(''));
    const text = readFileSync(join(dir, 'etc/config.yaml'), 'utf8');
    // The first line points editors with a YAML language server at the schema written beside it.
    assert.match(text, /^# yaml-language-server: \$schema=config\.schema\.json\n# stiefelsystem configuration/);
    const schema = JSON.parse(readFileSync(join(dir, 'etc/config.schema.json'), 'utf8')) as { $schema: string; properties: Record<string, unknown> };
    assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.deepEqual(Object.keys(schema.properties), ['secret', 'network', 'discovery', 'link', 'payload', 'server', 'autokexec', 'client']);
    assert.equal(parseConfigText(text, join(dir, 'etc/config.yaml')).secret, join(dir, 'etc/secret'));
    const st = statSync(join(dir, 'etc/secret'));
    assert.equal(st.size, 32);
    assert.equal(st.mode & 0o777, 0o600);
    assert.match(x.err.join(''), /wrote the config .*\nwrote a new shared secret to .*etc\/secret \(mode 0600\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('init never replaces a secret without --force, and then keeps the config', async () => {
  const dir = tmp();
  try {
    assert.equal(await main(io(['init', '--config', 'c.yaml'], dir), COMMANDS), 0);
    const config = readFileSync(join(dir, 'c.yaml'));
    const first = readFileSync(join(dir, 'secret'));
    const again = io(['init', '--config', 'c.yaml'], dir);
    assert.equal(await main(again, COMMANDS), 1);
    assert.equal(again.err.join(''), `stiefelctl init: the secret file ${join(dir, 'secret')} already exists; keep it, or pass --force to replace it (then copy it to every client again)\n`);
    assert.deepEqual(readFileSync(join(dir, 'secret')), first);
    const forced = io(['init', '--config', 'c.yaml', '--force'], dir);
    assert.equal(await main(forced, COMMANDS), 0, forced.err.join(''));
    assert.notDeepEqual(readFileSync(join(dir, 'secret')), first);
    assert.deepEqual(readFileSync(join(dir, 'c.yaml')), config, 'the config is kept');
    assert.match(forced.err.join(''), /kept the existing config/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('init with a new config but an existing secret writes nothing', async () => {
  const dir = tmp();
  try {
    writeFileSync(join(dir, 'secret'), Buffer.alloc(32), { mode: 0o600 });
    const x = io(['init', '--config', 'c.yaml'], dir);
    assert.equal(await main(x, COMMANDS), 1);
    assert.match(x.err.join(''), /already exists; keep it, or pass --force/);
    assert.ok(!existsSync(join(dir, 'c.yaml')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('server and client: a bad config is one line naming key, file and allowed values', async () => {
  const dir = tmp();
  try {
    writeFileSync(join(dir, 'c.yaml'), 'payload:\n  port: 0\n');
    for (const cmd of ['server', 'client']) {
      const x = io([cmd, '--config', 'c.yaml'], dir);
      assert.equal(await main(x, COMMANDS), 1);
      assert.equal(x.err.join(''), `stiefelctl ${cmd}: config ${join(dir, 'c.yaml')}: payload.port must be an integer from 1 to 65535, not 0\n`);
    }
    writeFileSync(join(dir, 'ok.yaml'), 'secret: s\n');
    const x = io(['server', '--config', 'ok.yaml'], dir);
    assert.equal(await main(x, COMMANDS), 1);
    assert.match(x.err.join(''), /^stiefelctl server: the secret file .*\/s does not exist: run 'stiefelctl init'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('client: --out and --no-kexec go together', async () => {
  for (const argv of [['client', '--out', '/tmp/x'], ['client', '--no-kexec']]) {
    const x = io(argv, '/');
    assert.equal(await main(x, COMMANDS), 2);
    assert.match(x.err.join(''), /^stiefelctl client: --(out DIR needs --no-kexec|no-kexec needs --out DIR).*see 'stiefelctl client --help'/);
  }
});

test('server without server.disk or server.boot says what to set', async () => {
  const dir = tmp();
  try {
    writeFileSync(join(dir, 'c.yaml'), 'secret: s\nnetwork: {interfaces: [stf3none0]}\n');
    writeFileSync(join(dir, 's'), Buffer.alloc(32), { mode: 0o600 });
    const x = io(['server', '--config', 'c.yaml'], dir);
    assert.equal(await main(x, COMMANDS), 1);
    assert.match(x.err.join(''), /neither server\.disk nor server\.boot is set: name the laptop's disk \(its boot entries are found there\) or the kernel, initrd and cmdline/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
