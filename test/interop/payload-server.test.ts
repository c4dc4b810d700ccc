// The payload server against real TLS-PSK clients over loopback (no root):
// a desktop that stops reading does not keep the laptop forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { createStreamLogger } from '../../src/log';
import { fetchPayload } from '../../src/desktop/payload-client';
import { ClientLock } from '../../src/laptop/client-lock';
import { startPayloadServer } from '../../src/laptop/payload-server';
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
