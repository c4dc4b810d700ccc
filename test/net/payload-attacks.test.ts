// Tampering, truncation, replays and strangers against the payload channel,
// in network namespaces. The laptop side is test/net/fixtures/attack-server.ts
// (the real responder and payload server with a fault put in); the desktop
// side is the real bundled `stiefelctl client`. Budget: about 30 s.
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deriveSubKeys } from '../../src/crypto/keys';
import { PAYLOAD_CIPHER, PSK_IDENTITY } from '../../src/payload/tls';
import { REPO_ROOT } from '../helpers/cli';
import { requireTool } from '../helpers/tools';
import { writeKernelFile, writePayloadFile } from './fixtures/payload-files';
import { buildWorld, writeConfig, writeSecret, type World } from './fixtures/world';

const INITRD_SIZE = 96 * 1024 * 1024;
let w: World;
let secret: Buffer;
let kernel: string;
let initrd: string;

before(async () => {
  w = await buildWorld();
  kernel = join(w.dir, 'vmlinuz-laptop');
  initrd = join(w.dir, 'initrd-laptop.img');
  writeKernelFile(kernel);
  writePayloadFile(initrd, INITRD_SIZE);
  secret = writeSecret(join(w.dir, 'secret'));
  writeConfig(join(w.dir, 'client.yaml'), { secret: 'secret', timeoutS: 20 });
  // A kexec stand-in that records any call: the real one would replace this machine's kernel.
  mkdirSync(join(w.dir, 'bin'));
  writeFileSync(join(w.dir, 'bin', 'kexec'), `#!/bin/sh\necho "$@" >> ${join(w.dir, 'kexec-calls')}\n`);
  chmodSync(join(w.dir, 'bin', 'kexec'), 0o755);
});

after(async () => {
  await w?.cleanup();
});

async function attackServer(t: TestContext, mode: string, extra: string[] = []) {
  const p = w.lab.spawn(
    w.server,
    process.execPath,
    ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/attack-server.ts'), '--secret', join(w.dir, 'secret'), '--kernel', kernel, '--initrd', initrd, '--mode', mode, ...extra],
    { cwd: REPO_ROOT, label: `attack server (${mode})` },
  );
  t.after(() => p.stop());
  await p.waitFor(/READY/, 30_000);
  return p;
}

type Outcome = { code: number | null; line: string; stderr: string };

async function runClient(t: TestContext, args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  const p = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'client.yaml'), ...args], {
    env: { ...process.env, PATH: `${join(w.dir, 'bin')}:${process.env.PATH}`, ...env },
    label: 'stiefelctl client',
  });
  t.after(() => p.stop());
  const r = await p.wait(60_000);
  return { code: r.code, line: p.stderr.trim().split('\n').at(-1)!, stderr: p.stderr };
}

function noKexec(): void {
  assert.ok(!existsSync(join(w.dir, 'kexec-calls')), 'nothing was kexec\'d');
}

test('a bit flipped on the way is caught by TLS: one line, nothing written', async (t) => {
  const server = await attackServer(t, `flip:${50_000_000}`);
  const out = join(w.dir, 'out-flip');
  const r = await runClient(t, ['--no-kexec', '--out', out]);
  await server.waitFor(/proxy: flipped byte/);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.line, /^stiefelctl client: the connection to the server at \[fe80::[0-9a-f:]+%stf3c1\]:4645 was tampered with or corrupted \(a TLS record failed authentication\); nothing was used$/);
  assert.ok(!existsSync(out), 'the output directory was not left behind');
});

test('a connection cut in the middle: truncated, nothing kexec\'d, no files left', async (t) => {
  await attackServer(t, `cut:${40_000_000}`);
  const tmp = join(w.dir, 'tmp-cut');
  mkdirSync(tmp);
  const r = await runClient(t, [], { TMPDIR: tmp });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.line, /^stiefelctl client: the initrd is truncated: the connection to the server at \[fe80::[0-9a-f:]+%stf3c1\]:4645 broke after \d+ of 100663296 bytes; nothing was used$/);
  noKexec();
  assert.deepEqual(readdirSync(tmp), []);
});

test('a connection that goes quiet: the client gives up after client.stall_timeout_s', async (t) => {
  writeConfig(join(w.dir, 'client-stall.yaml'), { secret: 'secret', timeoutS: 20, extra: 'client:\n  stall_timeout_s: 2\n' });
  await attackServer(t, `stall:${30_000_000}`);
  const out = join(w.dir, 'out-stall');
  const p = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'client-stall.yaml'), '--no-kexec', '--out', out], { label: 'client' });
  t.after(() => p.stop());
  const r = await p.wait(60_000);
  assert.equal(r.code, 1, p.output);
  assert.match(p.stderr.trim().split('\n').at(-1)!, /^stiefelctl client: the server at \[fe80::[0-9a-f:]+%stf3c1\]:4645 sent nothing for 2 s after \d+ of 100663296 bytes of the initrd; nothing was used$/);
  assert.ok(!existsSync(out));
});

test('a laptop serving other bytes than it signed: the digest check refuses, the directory keeps only what it had', async (t) => {
  const server = await attackServer(t, 'lie');
  const out = join(w.dir, 'out-lie');
  mkdirSync(out);
  writeFileSync(join(out, 'keep'), 'mine');
  const r = await runClient(t, ['--no-kexec', '--out', out]);
  assert.equal(r.code, 1, r.stderr);
  // The lie is at byte 1000 of the initrd: its first piece fails.
  assert.equal(
    r.line,
    'stiefelctl client: the initrd does not match the SHA-256 digests in the signed manifest (bytes 0 to 8388607): it was altered on the laptop or on the way; nothing was used',
  );
  assert.deepEqual(readdirSync(out), ['keep']);
  assert.ok(server.running);
});

test('an initrd that ends early on the laptop: the server aborts the stream, the client says truncated', async (t) => {
  const server = await attackServer(t, 'short');
  const tmp = join(w.dir, 'tmp-short');
  mkdirSync(tmp);
  const r = await runClient(t, [], { TMPDIR: tmp });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.line, /^stiefelctl client: the initrd is truncated: the connection to the server at \[fe80::[0-9a-f:]+%stf3c1\]:4644 broke after \d+ of 100663296 bytes; nothing was used$/);
  await server.waitFor(/the initrd .* ended after \d+ of 100663296 bytes; connection to .* aborted/);
  noKexec();
  assert.deepEqual(readdirSync(tmp), []);
});

test('TLS: only ECDHE-PSK-CHACHA20-POLY1305 with the right key; other keys, other suites and plain HTTP get nothing', async (t) => {
  requireTool('openssl');
  requireTool('curl');
  const server = await attackServer(t, 'pass');
  const ll = await w.lab.linkLocal(w.server, 'stf3s1');
  const target = `[${ll}%stf3c1]:4644`;
  const psk = deriveSubKeys(secret).payloadPsk.toString('hex');
  const session = 'ab'.repeat(16);
  const request = `GET /v1/manifest?nonce=${'cd'.repeat(16)} HTTP/1.1\r\nhost: x\r\nstiefel-session: ${session}\r\nconnection: close\r\n\r\n`;
  const sClient = (key: string, cipher: string) =>
    w.lab.exec(w.client, 'openssl', ['s_client', '-connect', target, '-tls1_2', '-psk', key, '-psk_identity', PSK_IDENTITY, '-cipher', cipher, '-quiet', '-ign_eof'], { input: request, timeoutMs: 10_000 });

  // An independent TLS implementation with the right key gets a signed manifest over the pinned suite.
  const good = await w.lab.exec(w.client, 'openssl', ['s_client', '-connect', target, '-tls1_2', '-psk', psk, '-psk_identity', PSK_IDENTITY, '-cipher', PAYLOAD_CIPHER, '-ign_eof'], { input: request, timeoutMs: 10_000 });
  assert.match(good.stdout, /Cipher is ECDHE-PSK-CHACHA20-POLY1305/);
  assert.match(good.stdout, /HTTP\/1\.1 200 OK/);
  assert.match(good.stdout, /"manifest":"[A-Za-z0-9+/=]+","hmac":"[0-9a-f]{64}"/);

  // A suite without forward secrecy is not offered, even with the right key.
  const plainPsk = await sClient(psk, 'PSK-CHACHA20-POLY1305');
  assert.notEqual(plainPsk.code, 0);
  assert.doesNotMatch(plainPsk.stdout, /HTTP\//);
  await server.waitFor(/refused a payload connection from .*: TLS handshake failed \(the client does not offer TLS 1\.2 ECDHE-PSK-CHACHA20-POLY1305\)/);

  // The wrong key fails the handshake; the laptop says why.
  const wrong = await sClient('00'.repeat(32), PAYLOAD_CIPHER);
  assert.notEqual(wrong.code, 0);
  assert.doesNotMatch(wrong.stdout, /HTTP\//);
  await server.waitFor(/refused a payload connection from fe80::[0-9a-f:]+%stf3s1: TLS handshake failed \(the client holds a different secret\)/);

  // No plaintext listener: HTTP and certificate-based HTTPS get no answer.
  const http = await w.lab.exec(w.client, 'curl', ['-sS', '-m', '5', '-i', `http://${target.replace('%', '%25')}/v1/manifest`]);
  assert.notEqual(http.code, 0);
  assert.doesNotMatch(http.stdout, /^HTTP\//m);
  await server.waitFor(/refused a payload connection from .*: TLS handshake failed \(not a stiefelsystem TLS-PSK client\)/);
  const https = await w.lab.exec(w.client, 'curl', ['-sS', '-m', '5', '-k', '-i', `https://${target.replace('%', '%25')}/v1/manifest`]);
  assert.notEqual(https.code, 0);
  assert.doesNotMatch(https.stdout, /^HTTP\//m);
});

test('our client with another key: one line saying the secrets differ', async (t) => {
  await attackServer(t, 'pass');
  const ll = await w.lab.linkLocal(w.server, 'stf3s1');
  const other = Buffer.alloc(32, 7);
  const p = w.lab.spawn(
    w.client,
    process.execPath,
    ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/fetch-client.ts'), `${ll}%stf3c1`, '4644', other.toString('hex'), join(w.dir, 'fetch-out')],
    { cwd: REPO_ROOT, label: 'fetch-client' },
  );
  t.after(() => p.stop());
  const r = await p.wait(30_000);
  assert.equal(r.code, 1, p.output);
  assert.match(p.stdout.trim(), /^E_PAYLOAD_SECRET the TLS handshake with the server at \[fe80::[0-9a-f:]+%stf3c1\]:4644 failed: the two machines hold different secrets/);
  assert.deepEqual(readdirSync(join(w.dir, 'fetch-out')), []);
});

test('the passphrase question travels inside TLS: the captured stream never shows it', async (t) => {
  requireTool('script');
  const capture = join(w.dir, 'capture.bin');
  const server = await attackServer(t, 'ask', ['--capture', capture]);
  const out = join(w.dir, 'out-ask');
  // `script` gives the client a terminal, as on the desktop's console.
  const cmd = `${process.execPath} ${w.cli} client --config ${join(w.dir, 'client.yaml')} --no-kexec --out ${out}`;
  const p = w.lab.spawn(w.client, 'script', ['-qfec', cmd, '/dev/null'], { label: 'client in a terminal' });
  t.after(() => p.stop());
  await p.waitFor(/The laptop asks: passphrase for \/dev\/stf3disk2 \(cryptboot\) \(typing is not shown\)/);
  p.child.stdin!.write('correct horse battery\r');
  await server.waitFor(/ANSWER correct horse battery/);
  const r = await p.wait(60_000);
  assert.equal(r.code, 0, p.output);
  assert.ok(!p.output.includes('correct horse'), 'the passphrase was not echoed');
  // On a terminal the progress bar redraws in place.
  assert.match(p.output, /\x1b\[1A\x1b\[2Kdownloading \[#+\] [\d.]+ MB of/);
  const bytes = readFileSync(capture);
  assert.ok(bytes.length > INITRD_SIZE, 'the capture holds the whole conversation');
  assert.equal(bytes.indexOf('correct horse'), -1);
  assert.equal(bytes.indexOf('passphrase for'), -1);
  assert.deepEqual(readdirSync(out).sort(), ['cmdline', 'initrd.img', 'vmlinuz']);
});

test('no terminal to ask on: the question is refused and both sides say why', async (t) => {
  const server = await attackServer(t, 'ask');
  const out = join(w.dir, 'out-noterm');
  const r = await runClient(t, ['--no-kexec', '--out', out], { });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.line, /^stiefelctl client: the manifest request from the server at .* failed: the laptop cannot prepare its boot payload: the desktop could not answer 'passphrase for \/dev\/stf3disk2 \(cryptboot\)': no terminal to ask/);
  await server.waitFor(/cannot prepare the boot payload for .*: the desktop could not answer/);
  assert.ok(!existsSync(out));
});
