// The payload server against real TLS-PSK clients over loopback (no root):
// a desktop that stops reading does not keep the laptop forever; sessions
// belong to their host; the route table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:tls';
import { createStreamLogger } from '../../src/log';
import { fetchPayload } from '../../src/desktop/payload-client';
import { ClientLock } from '../../src/laptop/client-lock';
import { routeOf, startPayloadServer, tlsFailureReason } from '../../src/laptop/payload-server';
import { FilesPayloadSource } from '../../src/laptop/payload-source';
import { pskClientOptions } from '../../src/payload/tls';

test('a desktop that stops reading is cut off after the stall timeout, and the next one is served', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-interop-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'k'), randomBytes(1024 * 1024));
  writeFileSync(join(dir, 'i'), randomBytes(64 * 1024 * 1024));
  const psk = randomBytes(32);
  const manifestKey = randomBytes(32);
  const lines: string[] = [];
  const log = createStreamLogger({ write: (l) => lines.push(l) });
  const source = new FilesPayloadSource({ kernel: join(dir, 'k'), initrd: join(dir, 'i'), cmdline: 'ro', family: 'dracut' });
  await source.prepare();
  const server = await startPayloadServer(
    {
      psk,
      manifestKey,
      port: 0,
      serverName: 'lap',
      source,
      nbd: { port: 10809, export: 'disk', blockSize: 512 },
      attach: 'stiefelsystem',
      lock: new ClientLock({ handoffMs: 60_000, idleMs: 200 }),
      stallTimeoutMs: 700,
    },
    { log },
  );
  t.after(() => server.close());

  // Desktop A (over IPv6 loopback) asks for the initrd and then reads nothing.
  const session = 'aa'.repeat(16);
  const a = connect({ ...pskClientOptions(psk), host: '::1', port: server.port });
  await new Promise<void>((r) => a.once('secureConnect', () => r()));
  a.write(`GET /v1/manifest?nonce=${'bb'.repeat(16)} HTTP/1.1\r\nhost: x\r\nstiefel-session: ${session}\r\n\r\n`);
  a.write(`GET /v1/files/initrd HTTP/1.1\r\nhost: x\r\nstiefel-session: ${session}\r\n\r\n`);
  await new Promise((r) => setTimeout(r, 150));
  a.pause();

  // Desktop B (over IPv4 loopback, another host) is refused while A holds the laptop...
  const out = join(dir, 'out');
  mkdirSync(out);
  const fetchB = () =>
    fetchPayload({ address: '127.0.0.1', port: server.port, psk, manifestKey, dir: out, maxFileBytes: 2 ** 30 }, { log: createStreamLogger({ write: () => {} }), signal: new AbortController().signal });
  await assert.rejects(fetchB(), (e: Error) => /refused this desktop: the laptop is busy: it is serving the desktop at ::1/.test(e.message));
  // ...and served once the server gave up on A.
  const cutOff = /sending the initrd to ::1 failed after \d+ of 67108864 bytes: the client read nothing for 1 s/;
  for (let i = 0; i < 100 && !lines.some((l) => cutOff.test(l)); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(lines.some((l) => cutOff.test(l)), lines.join(''));
  // A, reading again, finds its connection ended short of the initrd.
  let got = 0;
  a.on('data', (d: Buffer) => (got += d.length));
  a.resume();
  await new Promise<void>((r) => a.once('close', () => r()));
  assert.ok(got < 64 * 1024 * 1024, `A got ${got} bytes`);
  await new Promise((r) => setTimeout(r, 300));
  const b = await fetchB();
  assert.equal(b.bytes, 65 * 1024 * 1024);
  assert.equal(readdirSync(out).length, 2);
  await b.discard();
});

/** One request on a fresh TLS-PSK connection from `host` (a loopback address) to the same; the status and the body. */
function ask(psk: Buffer, host: string, port: number, path: string, session: string, signal?: AbortSignal): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ ...pskClientOptions(psk), agent: false, host, localAddress: host, port, path, signal, headers: { host: 'x', 'stiefel-session': session } }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test("a session id is its host's own; a new desktop's session ends the old desktop's (and its payload preparation)", async (t) => {
  const psk = randomBytes(32);
  const aborted: unknown[] = [];
  // A payload that takes until its session ends: the laptop still asking for a passphrase, say.
  const source = {
    resolve: ({ signal }: { signal: AbortSignal }) =>
      new Promise<never>((_, reject) => signal.addEventListener('abort', () => {
        aborted.push(signal.reason);
        reject(signal.reason);
      }, { once: true })),
  };
  const server = await startPayloadServer(
    {
      psk,
      manifestKey: randomBytes(32),
      port: 0,
      serverName: 'lap',
      source,
      nbd: { port: 10809, export: 'disk', blockSize: 512 },
      attach: 'stiefelsystem',
      lock: new ClientLock({ handoffMs: 60_000, idleMs: 200 }),
    },
    { log: createStreamLogger({ write: () => {} }) },
  );
  t.after(() => server.close());
  const sessionA = 'a1'.repeat(16);
  // Desktop A (::1) asks for the manifest, which waits, then goes away.
  const gone = new AbortController();
  const pending = ask(psk, '::1', server.port, `/v1/manifest?nonce=${'0c'.repeat(16)}`, sessionA, gone.signal).catch((e: Error) => e);
  await new Promise((r) => setTimeout(r, 200));
  gone.abort();
  await pending;
  await new Promise((r) => setTimeout(r, 400)); // the lock forgets an idle desktop after 200 ms
  assert.deepEqual(aborted, [], 'the session outlives its connection');

  // Desktop B (127.0.0.1) with a session of its own takes over: A's
  // session, and the payload it was preparing, end.
  const sessionB = 'b2'.repeat(16);
  const own = await ask(psk, '127.0.0.1', server.port, '/v1/question?wait=0', sessionB);
  assert.equal(own.status, 204);
  assert.equal(aborted.length, 1);
  assert.match(String(aborted[0]), /another desktop took over/);
  // Desktop C (127.0.0.2), once B is idle, presenting B's session id is refused.
  await new Promise((r) => setTimeout(r, 400));
  const stolen = await ask(psk, '127.0.0.2', server.port, '/v1/question?wait=0', sessionB);
  assert.equal(stolen.status, 409);
  assert.deepEqual(JSON.parse(stolen.body), { code: 'E_SESSION', message: 'this session belongs to another host' });
});

test('every request of the protocol has one route; anything else is no route', () => {
  assert.equal(routeOf('GET', '/v1/manifest')?.route.handle.name, 'serveManifest');
  assert.deepEqual(routeOf('GET', '/v1/files/initrd')?.params, ['initrd']);
  assert.deepEqual(routeOf('POST', '/v1/answer/0123456789abcdef')?.params, ['0123456789abcdef']);
  assert.equal(routeOf('POST', '/v1/done')?.route.handle.name, 'serveDone');
  for (const [method, path] of [['GET', '/v1/files/secret'], ['POST', '/v1/manifest'], ['GET', '/v2/manifest'], ['GET', '/v1/answer/0123456789abcdef'], ['GET', '/v1/manifest/x'], ['GET', '/manifest']]) {
    assert.equal(routeOf(method!, path!), undefined, `${method} ${path}`);
  }
});

test('a TLS client naming another PSK identity is one plain warning line, not OpenSSL text', async (t) => {
  const psk = randomBytes(32);
  const lines: string[] = [];
  const server = await startPayloadServer(
    {
      psk,
      manifestKey: randomBytes(32),
      port: 0,
      serverName: 'lap',
      source: new FilesPayloadSource({ kernel: '/nonexistent/k', initrd: '/nonexistent/i', cmdline: '', family: 'dracut' }),
      nbd: { port: 10809, export: 'disk', blockSize: 512 },
      attach: 'stiefelsystem',
      lock: new ClientLock({ handoffMs: 60_000, idleMs: 200 }),
    },
    { log: createStreamLogger({ write: (l) => lines.push(l) }) },
  );
  t.after(() => server.close());
  const c = connect({ ...pskClientOptions(psk), pskCallback: () => ({ psk, identity: 'someone-else' }), host: '127.0.0.1', port: server.port });
  await new Promise<void>((r) => c.once('error', () => r()).once('close', () => r()));
  for (let i = 0; i < 50 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(lines, ['warning: refused a payload connection from 127.0.0.1: TLS handshake failed (the client named an unknown key (another program, or another stiefelsystem version))\n']);
  assert.equal(tlsFailureReason(new Error('80:error:0A0000DF:SSL routines:some_function:some reason text:../x.c:1:\n')), 'some reason text');
});

test('a download ends when its last file is verified: the question poll it stops waits out no retry pause', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-interop-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'k'), randomBytes(64 * 1024));
  writeFileSync(join(dir, 'i'), randomBytes(1024 * 1024));
  const psk = randomBytes(32);
  const manifestKey = randomBytes(32);
  const source = new FilesPayloadSource({ kernel: join(dir, 'k'), initrd: join(dir, 'i'), cmdline: 'ro', family: 'dracut' });
  await source.prepare();
  const server = await startPayloadServer(
    { psk, manifestKey, port: 0, serverName: 'lap', source, nbd: { port: 10809, export: 'disk', blockSize: 512 }, attach: 'stiefelsystem', lock: new ClientLock({ handoffMs: 60_000, idleMs: 200 }) },
    { log: createStreamLogger({ write: () => {} }) },
  );
  t.after(() => server.close());
  const out = join(dir, 'out');
  mkdirSync(out);
  // The end of the session aborts the poll that is waiting for a question.
  // Were that taken for a failed poll, the loop would pause for
  // questionRetryMs before it saw the session end, and so would the fetch.
  const fetched = fetchPayload(
    { address: '127.0.0.1', port: server.port, psk, manifestKey, dir: out, maxFileBytes: 2 ** 30, questionRetryMs: 60_000 },
    { log: createStreamLogger({ write: () => {} }), signal: new AbortController().signal },
  );
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), 20_000)));
  const first = await Promise.race([fetched, late]);
  clearTimeout(timer);
  assert.notEqual(first, 'late', 'fetchPayload still waiting 20 s after a 1 MiB download');
  const b = await fetched;
  assert.equal(b.bytes, 64 * 1024 + 1024 * 1024);
  await b.discard();
});
