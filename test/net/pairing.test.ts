// Pairing between network namespaces: a desktop that holds no secret (as a
// PXE-booted stiefelOS) fetches the iPXE script and stiefelOS over HTTP from
// the real `stiefelctl server`, then `stiefelctl client --pair` asks for the
// code on its terminal (a pty made by script(1)), is refused once for a wrong
// code, pairs with the code the laptop's log shows, and gets the payload
// through the usual TLS-PSK channel with this boot's keys. A second desktop
// is refused while the first holds the laptop; hostile requests leave the
// server serving. Budget: about 20 s.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeNewc } from '../../src/cpio/newc';
import { writePayloadFile } from './fixtures/payload-files';
import { buildWorld, writeConfig, writeSecret, type World } from './fixtures/world';

let w: World;
const sha = (p: string, length?: number) => createHash('sha256').update(readFileSync(p).subarray(0, length)).digest('hex');

before(async () => {
  w = await buildWorld({ secondClient: true });
  writePayloadFile(join(w.dir, 'k'), 3 * 1024 * 1024 + 5);
  writePayloadFile(join(w.dir, 'i'), 5 * 1024 * 1024 + 1);
  writeSecret(join(w.dir, 'secret'));
  // The stiefelOS served by PXE: a kernel and an initrd without secret (a
  // plain cpio here; the VM test serves a real one).
  const pxe = join(w.dir, 'pxe');
  mkdirSync(pxe);
  writePayloadFile(join(pxe, 'vmlinuz'), 2 * 1024 * 1024 + 3);
  writeFileSync(join(pxe, 'initrd.img'), encodeNewc([{ type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 }]));
  writeConfig(join(w.dir, 'server.yaml'), {
    secret: 'secret',
    kernel: join(w.dir, 'k'),
    initrd: join(w.dir, 'i'),
    extra: `  handoff_timeout_s: 60\n  pxe:\n    image: ${pxe}\n    code_valid_s: 120\n`,
  });
  // The desktop's config names a secret that does not exist: pairing never reads it.
  writeConfig(join(w.dir, 'client.yaml'), { secret: 'no-such-secret', timeoutS: 10 });
  // The link's IPv4 addresses, as DHCP from the laptop would give them (the boot services have their own test).
  await w.lab.ip(w.server, ['addr', 'add', '10.185.0.1/24', 'dev', 'stf3s1']);
  await w.lab.ip(w.client, ['addr', 'add', '10.185.0.2/24', 'dev', 'stf3c1']);
  await w.lab.ip(w.client, ['link', 'set', 'stf3c1', 'up']);
  await w.lab.ip(w.client2!, ['link', 'set', 'stf3d0', 'up']);
});

after(async () => {
  await w?.cleanup();
});

function startServer(t: TestContext) {
  const p = w.lab.spawn(w.server, process.execPath, [w.cli, 'server', '--config', join(w.dir, 'server.yaml')], { label: 'stiefelctl server' });
  t.after(() => p.stop());
  return p;
}

/** `stiefelctl client --pair` on a terminal: script(1) gives it a pty whose input is our pipe. */
function startPairingClient(t: TestContext, ns: World['client'], pair: string, out: string) {
  const command = [process.execPath, w.cli, 'client', '--config', join(w.dir, 'client.yaml'), '--pair', `'${pair}'`, '--no-kexec', '--out', out].join(' ');
  const p = w.lab.spawn(ns, 'script', ['-qfec', command, '/dev/null'], { label: 'stiefelctl client --pair' });
  t.after(() => p.stop());
  return p;
}

async function curl(ns: World['client'], args: string[]): Promise<{ code: number; stdout: string }> {
  const r = await w.lab.exec(ns, 'curl', ['-sS', '--max-time', '10', ...args]);
  return { code: r.code ?? -1, stdout: r.stdout };
}

test('a desktop with no secret boots by the iPXE script, pairs with the code after a wrong one, and gets the payload; a second desktop is refused', async (t) => {
  const server = startServer(t);
  const code = (await server.waitFor(/pairing code for a desktop that PXE-boots: (\d{3} \d{3}); valid 2 min, 3 tries/))[1]!;
  await server.waitFor(/serving 'stf3-laptop'/);
  // The boot services run on both links (no other DHCP server there): they hand out the script's URL.
  await server.waitFor(/PXE on stf3s1: DHCP for PXE clients from 10\.185\.\d+\.1, boot file http:\/\/10\.185\.\d+\.1:4680\/pxe\/boot\.ipxe/);

  // What iPXE would do: the script, then the kernel and initrd it names.
  const script = await curl(w.client, ['http://10.185.0.1:4680/pxe/boot.ipxe']);
  assert.equal(script.code, 0, script.stdout);
  const serverLl = await w.lab.linkLocal(w.server, 'stf3s1');
  assert.match(script.stdout, new RegExp(`^kernel http://10\\.185\\.0\\.1:4680/pxe/vmlinuz initrd=initrd\\.img stiefel\\.role=client stiefel\\.pair=\\[${serverLl}\\]:4680 console=ttyS0,115200 console=tty0$`, 'm'));
  assert.match(script.stdout, /^initrd --name initrd\.img http:\/\/10\.185\.0\.1:4680\/pxe\/initrd\.img$/m);
  const pxeKernel = join(w.dir, 'pxe-vmlinuz');
  assert.equal((await curl(w.client, ['-o', pxeKernel, 'http://10.185.0.1:4680/pxe/vmlinuz'])).code, 0);
  assert.equal(sha(pxeKernel), sha(join(w.dir, 'pxe', 'vmlinuz')));
  const pair = /stiefel\.pair=(\S+)/.exec(script.stdout)![1]!;

  const out = join(w.dir, 'out');
  const client = startPairingClient(t, w.client, pair, out);
  await client.waitFor(/Pairing code shown on the laptop's console:/);
  client.child.stdin!.write('12345\r');
  await client.waitFor(/That is not a pairing code \(6 digits/);
  const wrong = code === '000 000' ? '111111' : '000000';
  client.child.stdin!.write(`${wrong}\r`);
  await client.waitFor(/wrong pairing code: 2 tries left/);
  await server.waitFor(/did not pair: wrong pairing code: 2 tries left/);
  client.child.stdin!.write(`${code}\r`);
  const r = await client.wait(60_000);
  assert.equal(r.code, 0, client.output);
  assert.match(client.output, /paired with the laptop 'stf3-laptop'/);
  assert.match(client.output, /payload verified: 8\.4 MB/);
  assert.equal(sha(join(out, 'vmlinuz')), sha(join(w.dir, 'k')));
  assert.equal(sha(join(out, 'initrd.img'), 5 * 1024 * 1024 + 1), sha(join(w.dir, 'i')));
  await server.waitFor(/the desktop '[^']+' at fe80::[0-9a-f:]+%stf3s1 paired with the code/);
  // Used once: the laptop shows the next desktop a new code.
  const next = (await server.waitFor(/pairing code for a desktop that PXE-boots: (\d{3} \d{3}) \(the last one was used\)/))[1]!;
  assert.notEqual(next, code);
  // `stiefelctl status` asks the running server: its links, and the code it shows now (sampled once a second).
  await new Promise((r) => setTimeout(r, 1500));
  const status = await w.lab.exec(w.server, process.execPath, [w.cli, 'status', '--json']);
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout) as { server: string; pairingCode: string; links: { name: string; carrier: boolean }[] };
  assert.equal(st.server, 'stf3-laptop');
  assert.equal(st.pairingCode, next);
  assert.deepEqual(st.links.map((l) => [l.name, l.carrier]), [['stf3s1', true], ['stf3s2', true]]);

  // A second desktop, on another port of the laptop, while the first holds it: refused before any code is asked for.
  const ll2 = await w.lab.linkLocal(w.server, 'stf3s2');
  const out2 = join(w.dir, 'out2');
  const second = startPairingClient(t, w.client2!, `[${ll2}]:4680`, out2);
  await second.waitFor(/Pairing code shown on the laptop's console:/);
  second.child.stdin!.write(`${next}\r`);
  const r2 = await second.wait(30_000);
  assert.equal(r2.code, 1, second.output);
  assert.match(second.output, /the laptop refused to pair: the laptop is busy/);
  assert.ok(!existsSync(out2));
  assert.ok(server.running);
});

test('hostile pairing requests get a clear refusal and the server keeps serving', async (t) => {
  const server = startServer(t);
  await server.waitFor(/pairing code for a desktop that PXE-boots/);
  const base = 'http://10.185.0.1:4680';
  const post = (path: string, body: string) => curl(w.client, ['-o', '-', '-w', ' %{http_code}', '-H', 'content-type: application/json', '--data-binary', body, `${base}${path}`]);
  assert.match((await post('/pxe/pair/start', 'not json')).stdout, /malformed pairing request: not JSON.* 400$/);
  assert.match((await post('/pxe/pair/start', 'x'.repeat(5000))).stdout, / 413$/);
  const identity = JSON.stringify({ version: 1, sid: '00'.repeat(16), message: '00'.repeat(32), name: 'evil' });
  assert.match((await post('/pxe/pair/start', identity)).stdout, /not a pairing message.* 400$/);
  assert.match((await post('/pxe/pair/confirm', JSON.stringify({ attempt: 'ab'.repeat(16), tag: '00'.repeat(32) }))).stdout, /unknown or over.* 404$/);
  assert.match((await curl(w.client, ['-o', '-', '-w', ' %{http_code}', `${base}/pxe/../../etc/passwd`])).stdout, / 404$/);
  assert.match((await curl(w.client, ['-o', '-', '-w', ' %{http_code}', `${base}/pxe/boot.ipxe`])).stdout, /^#!ipxe[\s\S]* 200$/);
  assert.ok(server.running);
});

test("the status panel on the laptop's console (a pty, console_panel: on): redrawn once a second above the log, cleared when the server stops", async (t) => {
  writeConfig(join(w.dir, 'server-panel.yaml'), {
    secret: 'secret',
    kernel: join(w.dir, 'k'),
    initrd: join(w.dir, 'i'),
    extra: `  console_panel: on\n  pxe:\n    image: ${join(w.dir, 'pxe')}\n`,
  });
  // script(1) gives the server a terminal of 80x25, as the Linux console starts.
  const command = `stty rows 25 cols 80 && exec ${process.execPath} ${w.cli} server --config ${join(w.dir, 'server-panel.yaml')}`;
  const p = w.lab.spawn(w.server, 'script', ['-qfec', command, '/dev/null'], { label: 'stiefelctl server on a pty' });
  t.after(() => p.stop());
  await p.waitFor(/serving 'stf3-laptop'/);
  await p.waitFor(/pairing  code \d{3} \d{3}/);
  await new Promise((r) => setTimeout(r, 2500));
  const { Terminal } = await import('@xterm/headless');
  const term = new Terminal({ cols: 80, rows: 25, allowProposedApi: true });
  await new Promise<void>((resolve) => term.write(p.stdout, resolve));
  const b = term.buffer.active;
  const rows = Array.from({ length: 25 }, (_, i) => b.getLine(b.viewportY + i)!.translateToString(true));
  const shown = rows.join('\n');
  assert.match(rows[0]!, /^stiefelsystem: 'stf3-laptop' serving since \d+ s$/, shown);
  assert.ok(rows.includes('desktop  none connected'), shown);
  assert.ok(rows.some((r) => /^links    stf3s1 (up|\d+ [MG]bit\/s), MTU 1500; stf3s2 (up|\d+ [MG]bit\/s), MTU 1500$/.test(r)), shown);
  assert.ok(rows.some((r) => /^pairing  code \d{3} \d{3} for a desktop that PXE-boots$/.test(r)), shown);
  assert.equal(rows[9], '-'.repeat(79), shown);
  // The log beneath the panel.
  assert.ok(rows.slice(10).some((r) => r.startsWith("serving 'stf3-laptop'")), shown);
  // Redrawn in place (the seconds count up), never by clearing the screen.
  assert.ok((p.stdout.match(/\x1b7/g) ?? []).length >= 2, 'at least two redraws');
  assert.doesNotMatch(p.stdout, /\x1b\[2J/);
  // SIGTERM to the server itself (script(1) would only hang its terminal up).
  const pgrep = await w.lab.exec(w.server, 'pgrep', ['-P', String(p.pid)]);
  const serverPid = Number(pgrep.stdout.trim().split('\n')[0]);
  assert.ok(serverPid > 0, `the server under script: ${pgrep.stdout} ${pgrep.stderr}`);
  process.kill(serverPid, 'SIGTERM');
  await p.waitFor(/stopped/, 15_000);
  assert.match(p.stdout, /\x1b7\x1b\[r(\x1b\[\d+;1H\x1b\[K){10}\x1b8/, 'the scroll region given back and the panel cleared');
});
