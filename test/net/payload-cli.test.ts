// stiefelctl server and client, the real bundled CLI, in network namespaces.
// Budget: about 40 s (a 260 MB payload is generated and moved a few times).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeNewc } from '../../src/cpio/newc';
import { initrdPadding } from '../../src/cpio/newc';
import { parseLinkConf } from '../../src/desktop/link-conf';
import { requireTool } from '../helpers/tools';
import { sha256OfFile, writeKernelFile, writePayloadFile } from './fixtures/payload-files';
import { buildWorld, watchPeakRss, writeConfig, writeSecret, type World } from './fixtures/world';

const INITRD_SIZE = 260 * 1024 * 1024 + 3; // odd: the secrets cpio needs padding
let w: World;
let kernel: string;
let initrd: string;
let kernelSha: string;
let initrdSha: string;

before(async () => {
  requireTool('ip');
  w = await buildWorld({ secondClient: true });
  kernel = join(w.dir, 'vmlinuz-laptop');
  initrd = join(w.dir, 'initrd-laptop.img');
  kernelSha = writeKernelFile(kernel);
  initrdSha = writePayloadFile(initrd, INITRD_SIZE);
  writeSecret(join(w.dir, 'secret'));
  writeConfig(join(w.dir, 'server.yaml'), { secret: 'secret', kernel, initrd, family: 'initramfs-tools' });
  writeConfig(join(w.dir, 'client.yaml'), { secret: 'secret', timeoutS: 30 });
});

after(async () => {
  await w?.cleanup();
});

function startServer(t: TestContext, config = 'server.yaml', env: Record<string, string> = {}) {
  const p = w.lab.spawn(w.server, process.execPath, [w.cli, 'server', '--config', join(w.dir, config)], {
    env: { ...process.env, ...env },
    label: 'stiefelctl server',
  });
  t.after(() => p.stop());
  return p;
}

function startClient(t: TestContext, ns: World['client'], args: string[], env: Record<string, string> = {}) {
  const p = w.lab.spawn(ns, process.execPath, [w.cli, 'client', ...args], { env: { ...process.env, ...env }, label: 'stiefelctl client' });
  t.after(() => p.stop());
  return p;
}

test('the client finds a server started after it on the one link of three that reaches it and gets the payload byte for byte; a second desktop asking meanwhile is refused', async (t) => {
  const out = join(w.dir, 'out');
  const client = startClient(t, w.client, ['--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', out]);
  const clientRss = watchPeakRss(client);
  await client.waitFor(/looking for the laptop on stf3c0, stf3c1, stf3c2/);
  // The server starts only now; its own link is still down until it brings it up.
  const server = startServer(t);
  const serverRss = watchPeakRss(server);
  await server.waitFor(/serving 'stf3-laptop'/);
  // A second desktop, cabled to another port of the laptop, asks while the first one downloads.
  await server.waitFor(/sending kernel .* to fe80::[0-9a-f:]+%stf3s1/);
  const out2 = join(w.dir, 'out2');
  const second = startClient(t, w.client2!, ['--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', out2]);
  const r = await client.wait(60_000);
  assert.equal(r.code, 0, client.output);
  const stderr = client.stderr;
  assert.match(stderr, /found the laptop 'stf3-laptop' at fe80::[0-9a-f:]+%stf3c1 on stf3c1/);
  assert.match(stderr, /downloading .* of 2\d\d\.\d MB \(100%\)/, 'plain progress lines when stderr is not a terminal');
  assert.ok(!stderr.includes('\x1b'), 'no terminal escapes in a log');
  assert.match(stderr, /payload verified: 2\d\d\.\d MB in/);

  // Byte-identical kernel; the initrd is the laptop's, then padding, then the secrets cpio.
  assert.deepEqual(readdirSync(out).sort(), ['cmdline', 'initrd.img', 'vmlinuz']);
  assert.equal(sha256OfFile(join(out, 'vmlinuz')), kernelSha);
  assert.equal(sha256OfFile(join(out, 'initrd.img'), INITRD_SIZE), initrdSha);
  assert.equal(statSync(join(out, 'initrd.img')).mode & 0o777, 0o600, 'the initrd holds keys: root only');
  const tail = readFileSync(join(out, 'initrd.img')).subarray(INITRD_SIZE);
  const pad = initrdPadding(INITRD_SIZE).length;
  assert.ok(tail.subarray(0, pad).every((b) => b === 0));
  const { entries } = decodeNewc(tail, pad);
  const conf = parseLinkConf(entries.find((e) => e.path === 'etc/stiefelsystem/link.conf')!.data.toString());

  // The command line names this link: the client's MAC on stf3c1 and the server's link-local address.
  const mac = await w.lab.mac(w.client, 'stf3c1');
  const serverLl = await w.lab.linkLocal(w.server, 'stf3s1');
  assert.equal(conf.STIEFEL_MAC, mac);
  assert.equal(conf.STIEFEL_SERVER, serverLl);
  assert.equal(conf.STIEFEL_NBD_PORT, '10809');
  const cmdline = readFileSync(join(out, 'cmdline'), 'utf8');
  assert.equal(
    cmdline,
    `root=UUID=0a1b2c3d ro quiet stiefel.mac=${mac} stiefel.ifname=stiefellink stiefel.server=${serverLl} stiefel.nbd_host=${serverLl} ` +
      `stiefel.nbd_port=10809 stiefel.nbd_export=disk stiefel.conf=/etc/stiefelsystem/link.conf\n`,
  );

  // Every interface was brought up by its side's stiefelctl.
  for (const [ns, names] of [[w.client, ['stf3c0', 'stf3c1', 'stf3c2']], [w.server, ['stf3s1', 'stf3s2']]] as const) {
    for (const name of names) assert.match(await w.lab.ip(ns, ['link', 'show', 'dev', name]), /<[^>]*\bUP\b/, name);
  }
  // Streaming both ways: memory stays far below the 260 MB payload.
  clientRss.stop();
  const clientPeak = clientRss.peakKb();
  const serverPeak = serverRss.peakKb();
  serverRss.stop();
  assert.ok(clientPeak > 0 && clientPeak < 160_000, `client peak RSS ${clientPeak} kB`);
  assert.ok(serverPeak > 0 && serverPeak < 160_000, `server peak RSS ${serverPeak} kB`);
  console.log(`# peak RSS with a ${(INITRD_SIZE / 1e6).toFixed(0)} MB initrd: client ${clientPeak} kB, server ${serverPeak} kB`);

  // The second desktop was refused, on both screens, and got nothing.
  const r2 = await second.wait(30_000);
  assert.equal(r2.code, 1, second.output);
  const line = second.stderr.trim().split('\n').at(-1)!;
  assert.match(line, /^stiefelctl client: the server at \[fe80::[0-9a-f:]+%stf3d0\]:4644 refused this desktop: the laptop is busy: .* the desktop at fe80::[0-9a-f:]+%stf3s1 .*only one desktop at a time$/);
  assert.ok(!existsSync(out2), 'nothing written for the refused desktop');
  await server.waitFor(/refused the desktop at fe80::[0-9a-f:]+%stf3s2: busy with fe80::[0-9a-f:]+%stf3s1/);
  assert.ok(server.running, 'the server keeps serving');
  await server.stop();
});

test('link.mtu 9000 and server.nbd.connections 2: the laptop sets the MTU on its interfaces and hands both to the desktop, whose link.conf carries them to the laptop OS', async (t) => {
  writeConfig(join(w.dir, 'server-mtu.yaml'), { secret: 'secret', kernel, initrd, family: 'initramfs-tools', extra: '  nbd:\n    connections: 2\nlink:\n  mtu: 9000\n' });
  const server = startServer(t, 'server-mtu.yaml');
  await server.waitFor(/serving 'stf3-laptop'/);
  for (const name of ['stf3s1', 'stf3s2']) assert.match(await w.lab.ip(w.server, ['link', 'show', 'dev', name]), /\bmtu 9000\b/, name);
  const out = join(w.dir, 'out-mtu');
  const client = startClient(t, w.client, ['--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', out]);
  const r = await client.wait(60_000);
  assert.equal(r.code, 0, client.output);
  const tail = readFileSync(join(out, 'initrd.img')).subarray(INITRD_SIZE);
  const { entries } = decodeNewc(tail, initrdPadding(INITRD_SIZE).length);
  const conf = parseLinkConf(entries.find((e) => e.path === 'etc/stiefelsystem/link.conf')!.data.toString());
  assert.equal(conf.STIEFEL_LINK_MTU, '9000');
  assert.equal(conf.STIEFEL_NBD_CONNECTIONS, '2');
  // The desktop's own interfaces are the laptop OS's to set (its attach script): stiefelOS on the desktop leaves them.
  assert.match(await w.lab.ip(w.client, ['link', 'show', 'dev', 'stf3c1']), /\bmtu 1500\b/);
  await server.stop();
  for (const name of ['stf3s1', 'stf3s2']) await w.lab.ip(w.server, ['link', 'set', 'dev', name, 'mtu', '1500']);
});

test('a new interface that appears later is brought up by the server', async (t) => {
  const server = startServer(t);
  await server.waitFor(/serving 'stf3-laptop'/);
  await w.lab.veth({ ns: w.server, name: 'stf3s9' }, { ns: w.client, name: 'stf3c9' });
  t.after(() => w.lab.ip(w.server, ['link', 'del', 'stf3s9']).catch(() => undefined));
  const until = Date.now() + 5000;
  let state = '';
  while (Date.now() < until) {
    state = await w.lab.ip(w.server, ['link', 'show', 'dev', 'stf3s9']);
    if (/<[^>]*\bUP\b/.test(state)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(state, /<[^>]*\bUP\b/);
  await server.stop();
});

test('different secrets: the client gives up with the fix, the server names the cause, nothing is written', async (t) => {
  writeSecret(join(w.dir, 'other-secret'));
  writeConfig(join(w.dir, 'wrong.yaml'), { secret: 'other-secret', timeoutS: 2 });
  const server = startServer(t);
  await server.waitFor(/serving/);
  const out = join(w.dir, 'out-wrong');
  const client = startClient(t, w.client, ['--config', join(w.dir, 'wrong.yaml'), '--no-kexec', '--out', out]);
  const r = await client.wait(30_000);
  assert.equal(r.code, 1);
  assert.match(
    client.stderr.trim().split('\n').at(-1)!,
    /^stiefelctl client: no stiefelsystem server answered on stf3c0, stf3c1, stf3c2 within 2 s; a server with a different secret would stay silent: check that both machines hold the same secret$/,
  );
  assert.ok(!existsSync(out));
  await server.waitFor(/warning: ignored discovery from fe80::[0-9a-f:]+%stf3s1: bad-tag \(a client with a different secret, or a tampered datagram\)/);
  await server.stop();

  // The same with the server holding the odd secret out.
  writeConfig(join(w.dir, 'server-wrong.yaml'), { secret: 'other-secret', kernel, initrd });
  const server2 = startServer(t, 'server-wrong.yaml');
  await server2.waitFor(/serving/);
  const client2 = startClient(t, w.client, ['--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', out]);
  // client.yaml waits 30 s; stop it once the server has seen and ignored it.
  await server2.waitFor(/ignored discovery from .*: bad-tag/);
  await client2.stop();
  assert.ok(!existsSync(out));
  await server2.stop();
});

test('without --no-kexec the client runs kexec -s -l with the verified files and its command line, then starts it', async (t) => {
  // The real kexec would replace this machine's kernel: a recording stand-in
  // earlier in PATH checks the exact arguments and the files they name.
  const bin = join(w.dir, 'bin');
  const record = join(w.dir, 'kexec-calls');
  mkdirSync(bin, { recursive: true });
  writeFileSync(
    join(bin, 'kexec'),
    `#!/bin/sh\n{ printf 'ARGS'; for a in "$@"; do printf ' <%s>' "$a"; done; echo\n` +
      `  if [ "$2" = -l ]; then sha256sum "$3" | cut -c1-64; i=\${4#--initrd=}; head -c ${INITRD_SIZE} "$i" | sha256sum | cut -c1-64; fi; } >> ${record}\n`,
  );
  chmodSync(join(bin, 'kexec'), 0o755);
  // On a machine run by systemd the hand-off is `systemctl kexec`: a stand-in
  // for that too, so that this test never reboots the machine it runs on.
  writeFileSync(join(bin, 'systemctl'), `#!/bin/sh\necho "SYSTEMCTL $*" >> ${record}\necho 'stand-in: not rebooting' >&2\nexit 1\n`);
  chmodSync(join(bin, 'systemctl'), 0o755);
  const underSystemd = existsSync('/run/systemd/system');
  const server = startServer(t);
  await server.waitFor(/serving/);
  const tmp = join(w.dir, 'kexec-tmp');
  mkdirSync(tmp);
  const client = startClient(t, w.client, ['--config', join(w.dir, 'client.yaml')], { PATH: `${bin}:${process.env.PATH}`, TMPDIR: tmp });
  const r = await client.wait(60_000);
  // The stand-ins return, which the real ones never do.
  assert.equal(r.code, 1, client.output);
  assert.match(client.stderr, underSystemd ? /systemctl kexec failed: stand-in: not rebooting/ : /kexec -e returned: the new kernel did not start/);
  const lines = readFileSync(record, 'utf8').trim().split('\n');
  assert.equal(lines.length, 4);
  const m = /^ARGS <-s> <-l> <(.+\/vmlinuz|.+kernel\.partial)> <--initrd=(.+)> <--command-line=(.+)>$/.exec(lines[0]!);
  assert.ok(m, lines[0]);
  assert.ok(m[1]!.startsWith(`${tmp}/stiefel-payload-`), m[1]);
  assert.match(m[3]!, /^root=UUID=0a1b2c3d ro quiet stiefel\.mac=[0-9a-f:]{17} .* stiefel\.nbd_host=fe80::[0-9a-f:]+ .* stiefel\.conf=\/etc\/stiefelsystem\/link\.conf$/);
  assert.equal(lines[1], kernelSha, 'kexec saw the verified kernel');
  assert.equal(lines[2], initrdSha, 'and the verified initrd');
  assert.equal(lines[3], underSystemd ? 'SYSTEMCTL kexec' : 'ARGS <-e>');
  assert.deepEqual(readdirSync(tmp), [], 'the work directory with the keys is gone');
  await server.stop();
});
