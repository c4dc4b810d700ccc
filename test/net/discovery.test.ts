// Discovery between network namespaces: hand-made datagrams against the real
// `stiefelctl server`, a replaying laptop against the real client, and the
// IPv4 broadcast path. Budget: about 15 s.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/cli';
import { writePayloadFile } from './fixtures/payload-files';
import { buildWorld, writeConfig, writeSecret, type World } from './fixtures/world';

let w: World;

before(async () => {
  w = await buildWorld();
  writePayloadFile(join(w.dir, 'k'), 3 * 1024 * 1024 + 5);
  writePayloadFile(join(w.dir, 'i'), 5 * 1024 * 1024 + 1);
  writeSecret(join(w.dir, 'secret'));
  // A laptop OS without stiefelsystem's hooks: mkinitcpio's own nbd hook attaches the disk (no WireGuard then).
  writeConfig(join(w.dir, 'server.yaml'), {
    secret: 'secret',
    kernel: join(w.dir, 'k'),
    initrd: join(w.dir, 'i'),
    family: 'mkinitcpio',
    extra: '  attach: family\n  wireguard:\n    enabled: false\n',
  });
  writeConfig(join(w.dir, 'client.yaml'), { secret: 'secret', timeoutS: 3 });
});

after(async () => {
  await w?.cleanup();
});

function server(t: TestContext) {
  const p = w.lab.spawn(w.server, process.execPath, [w.cli, 'server', '--config', join(w.dir, 'server.yaml')], {
    env: { ...process.env, STIEFEL_DEBUG: 'discovery' },
    label: 'stiefelctl server',
  });
  t.after(() => p.stop());
  return p;
}

test('only fresh, authentic, well-formed requests are answered; the rest is dropped silently and counted by reason', async (t) => {
  const s = server(t);
  await s.waitFor(/serving/);
  await w.lab.configure({ ns: w.client, name: 'stf3c1', up: true });
  await w.lab.linkLocal(w.client, 'stf3c1');
  const probe = await w.lab.exec(w.client, process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/discovery-probe.ts'), join(w.dir, 'secret'), 'stf3c1'], { timeoutMs: 30_000 });
  assert.equal(probe.code, 0, probe.stderr);
  const results = Object.fromEntries(probe.stdout.trim().split('\n').map((l) => {
    const r = JSON.parse(l) as { name: string; replies: number; bound: number };
    return [r.name, [r.replies, r.bound]];
  }));
  assert.deepEqual(results, {
    valid: [1, 1],
    replayed: [0, 0],
    stale: [0, 0],
    future: [0, 0],
    truncated: [0, 0],
    'foreign-key': [0, 0],
    garbage: [0, 0],
    'version-2': [0, 0],
    'hello-to-server': [0, 0],
    'valid-again': [1, 1],
  });
  // The server's debug log names each reason once per dropped datagram.
  for (const reason of ['replay', 'stale', 'truncated', 'bad-tag', 'foreign', 'version', 'unexpected']) {
    await s.waitFor(new RegExp(`dropped datagram from fe80::[0-9a-f:]+%stf3s1 port \\d+: ${reason}\\n`));
  }
  const stale = s.stderr.match(/: stale\n/g) ?? [];
  assert.equal(stale.length, 2, 'the past and the future request');
  // Warnings (not only debug lines) for the drops a person can act on.
  assert.match(s.stderr, /warning: ignored discovery from .*: bad-tag \(a client with a different secret/);
  assert.match(s.stderr, /warning: ignored discovery from .*: replay \(a replayed request\)/);
  assert.ok(s.running);
  // On exit the server sums up what it answered and dropped.
  await s.stop();
  assert.match(s.stderr, /discovery: answered 2; dropped: truncated 1, foreign 1, version 1, bad-tag 1, unexpected 1, stale 2, replay 1\n/);
  await w.lab.ip(w.client, ['link', 'set', 'dev', 'stf3c1', 'down']);
});

test('a genuine reply replayed from an earlier request is ignored by the client', async (t) => {
  const replayer = w.lab.spawn(w.server, process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/discovery-probe.ts'), join(w.dir, 'secret'), '-', 'responder'], {
    cwd: REPO_ROOT,
    label: 'replaying responder',
  });
  t.after(() => replayer.stop());
  await replayer.waitFor(/READY/);
  await w.lab.configure({ ns: w.server, name: 'stf3s1', up: true });
  const client = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', join(w.dir, 'o')], {
    env: { ...process.env, STIEFEL_DEBUG: 'discovery' },
    label: 'stiefelctl client',
  });
  t.after(() => client.stop());
  const r = await client.wait(20_000);
  await replayer.waitFor(/REPLAYING/);
  assert.equal(r.code, 1, client.output);
  assert.match(client.stderr, /dropped datagram from fe80::[0-9a-f:]+%stf3c1: unexpected/);
  assert.match(client.stderr.trim().split('\n').at(-1)!, /^stiefelctl client: no stiefelsystem server answered on stf3c0, stf3c1, stf3c2 within 3 s/);
});

test('IPv4 broadcast finds the laptop where IPv6 is off, and the payload follows over IPv4', async (t) => {
  for (const [ns, name, addr] of [[w.client, 'stf3c1', '10.83.1.2/24'], [w.server, 'stf3s1', '10.83.1.1/24']] as const) {
    await w.lab.exec(ns, 'sysctl', ['-q', '-w', `net.ipv6.conf.${name}.disable_ipv6=1`]);
    await w.lab.ip(ns, ['addr', 'add', addr, 'dev', name]);
    t.after(async () => {
      await w.lab.ip(ns, ['addr', 'del', addr, 'dev', name]).catch(() => undefined);
      await w.lab.exec(ns, 'sysctl', ['-q', '-w', `net.ipv6.conf.${name}.disable_ipv6=0`]);
    });
  }
  const s = server(t);
  await s.waitFor(/serving/);
  const out = join(w.dir, 'out4');
  const client = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', out], { label: 'stiefelctl client' });
  t.after(() => client.stop());
  const r = await client.wait(30_000);
  assert.equal(r.code, 0, client.output);
  assert.match(client.stderr, /found the laptop 'stf3-laptop' at 10\.83\.1\.1 on stf3c1/);
  const cmdline = readFileSync(join(out, 'cmdline'), 'utf8');
  assert.match(cmdline, / stiefel\.server=10\.83\.1\.1 .* nbd_host=10\.83\.1\.1 nbd_name=disk nbd_port=10809\n$/);
});
