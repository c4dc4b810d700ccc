// The ISO download against real HTTP and HTTPS servers on loopback (no root):
// a certificate made by openssl for the test, servers that drop the
// connection, ignore Range, change the file, stall, send without end or
// redirect. After every failure nothing is left at dest or dest.partial.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { downloadIso, type DownloadOptions } from '../../src/iso/download';
import { StiefelError } from '../../src/errors';
import { createStreamLogger } from '../../src/log';
import { requireTool } from '../helpers/tools';

const SIZE = 4 * 1024 * 1024;
const FILE = randomBytes(SIZE);
const FILE_SHA = sha(FILE);
let dir: string;
let tls: { key: Buffer; cert: Buffer };
let n = 0;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

before(() => {
  requireTool('openssl');
  dir = mkdtempSync(join(tmpdir(), 'stf-iso-dl-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=stiefel-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
  ], { stdio: 'ignore' });
  tls = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
});
after(() => rmSync(dir, { recursive: true, force: true }));

type Handler = (req: IncomingMessage, res: ServerResponse, count: number) => void;

/** A server on 127.0.0.1 that counts its requests; closed (with its sockets) after the test. */
async function serve(t: { after(fn: () => void | Promise<void>): void }, handler: Handler, o: { https?: boolean } = {}) {
  const sockets = new Set<Socket>();
  let count = 0;
  const requests: IncomingMessage[] = [];
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    requests.push(req);
    handler(req, res, ++count);
  };
  const server: Server = o.https ? createHttpsServer(tls, onRequest) : createHttpServer(onRequest);
  server.on(o.https ? 'secureConnection' : 'connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `${o.https ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { base, url: `${base}/image.iso`, requests, get count() { return count; } };
}

interface SendOptions {
  etag?: string;
  lastModified?: string;
  ranges?: boolean;
  /** Send only this many bytes of the body, then break the connection. */
  dropAfter?: number;
  /** Break it with a reset (the client's kernel may drop bytes still unread) rather than a clean close. */
  reset?: boolean;
}

/** Answers like a file server: Range (and If-Range) when `ranges`, and a broken connection when `dropAfter`. */
function sendFile(req: IncomingMessage, res: ServerResponse, body: Buffer, o: SendOptions = {}): void {
  let start = 0;
  const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  const ifRange = req.headers['if-range'];
  if (o.ranges && range && (ifRange === undefined || ifRange === o.etag || ifRange === o.lastModified)) start = Number(range[1]);
  const headers: Record<string, string | number> = { 'content-length': body.length - start, 'accept-ranges': o.ranges ? 'bytes' : 'none' };
  if (o.etag) headers.etag = o.etag;
  if (o.lastModified) headers['last-modified'] = o.lastModified;
  if (start > 0) headers['content-range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
  res.writeHead(start > 0 ? 206 : 200, headers);
  if (o.dropAfter === undefined) {
    res.end(body.subarray(start));
    return;
  }
  res.write(body.subarray(start, start + o.dropAfter), () => (o.reset ? res.socket?.destroy() : res.socket?.end()));
}

function paths() {
  const dest = join(dir, `iso-${++n}.iso`);
  return { dest, partial: `${dest}.partial` };
}

function quiet() {
  const lines: string[] = [];
  return { lines, log: createStreamLogger({ write: (l) => lines.push(l) }) };
}

function assertNothingLeft(p: { dest: string; partial: string }): void {
  assert.equal(existsSync(p.dest), false, 'dest is left');
  assert.equal(existsSync(p.partial), false, 'dest.partial is left');
}

async function refused(p: { dest: string; partial: string }, o: Omit<DownloadOptions, 'dest'>, code: string, message: RegExp): Promise<string> {
  let text = '';
  await assert.rejects(downloadIso({ dest: p.dest, ...o }, { log: quiet().log }), (e: Error) => {
    assert.ok(e instanceof StiefelError, `not a StiefelError: ${e.stack}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    assert.doesNotMatch(e.message, /\n/);
    text = e.message;
    return true;
  });
  assertNothingLeft(p);
  return text;
}

test('a whole download over HTTPS with the right SHA-256; progress climbs to the total', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE, { etag: '"a"' }), { https: true });
  const p = paths();
  const seen: { received: number; total: number | undefined }[] = [];
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: FILE_SHA.toUpperCase(), maxBytes: 2 * SIZE, ca: tls.cert, onProgress: (x) => seen.push(x) }, { log: quiet().log });
  assert.deepEqual({ ...got, seconds: 0 }, { path: p.dest, bytes: SIZE, sha256: FILE_SHA, resumed: 0, seconds: 0 });
  assert.ok(got.seconds > 0 && got.seconds < 10);
  assert.ok(readFileSync(p.dest).equals(FILE));
  assert.equal(existsSync(p.partial), false);
  assert.ok(seen.length > 1);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]!.received > seen[i - 1]!.received);
  assert.ok(seen.every((x) => x.total === SIZE));
  assert.equal(seen.at(-1)!.received, SIZE);
  assert.equal(s.requests[0]!.headers['user-agent']?.startsWith('stiefelctl/'), true);
});

test('HTTPS without a checksum is fine; an older file at dest is replaced', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE), { https: true });
  const p = paths();
  writeFileSync(p.dest, 'an older image');
  const got = await downloadIso({ url: s.url, dest: p.dest, maxBytes: 2 * SIZE, ca: tls.cert }, { log: quiet().log });
  assert.equal(got.sha256, FILE_SHA);
  assert.ok(readFileSync(p.dest).equals(FILE));
});

test('a certificate not trusted is one line naming the fix', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE), { https: true });
  const p = paths();
  writeFileSync(p.dest, 'an older image');
  await refused(p, { url: s.url, maxBytes: 2 * SIZE }, 'E_ISO_TLS', /^the certificate of 127\.0\.0\.1 is not trusted \(DEPTH_ZERO_SELF_SIGNED_CERT.*clock.*--sha256/);
});

test('plain HTTP without --sha256 is refused before any request; a malformed checksum too', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE));
  const p = paths();
  await refused(p, { url: s.url, maxBytes: 2 * SIZE }, 'E_USAGE', /^an ISO over plain HTTP needs --sha256 HEX \(nothing else proves it is the one you meant\)$/);
  await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: 'abc' }, 'E_USAGE', /64 hexadecimal digits/);
  await refused(p, { url: 'ftp://127.0.0.1/x.iso', maxBytes: 2 * SIZE, sha256: FILE_SHA }, 'E_USAGE', /^ftp: URLs cannot be downloaded/);
  assert.equal(s.count, 0);
});

test('a wrong SHA-256 names both digests and leaves nothing', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE));
  const p = paths();
  const wrong = sha(Buffer.from('another image'));
  await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: wrong }, 'E_ISO_CHECKSUM', new RegExp(`^the ISO from ${s.url} has SHA-256 ${FILE_SHA}, not the ${wrong} you gave: nothing is booted$`));
});

test('a server that drops the connection twice and honours Range: resumed twice, the bytes exact', async (t) => {
  const s = await serve(t, (req, res, count) => sendFile(req, res, FILE, { etag: '"v1"', ranges: true, dropAfter: count <= 2 ? 1_000_000 + count * 77_777 : undefined, reset: count === 2 }), { https: true });
  const p = paths();
  const { log, lines } = quiet();
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: FILE_SHA, maxBytes: 2 * SIZE, ca: tls.cert }, { log });
  assert.equal(got.resumed, 2);
  assert.equal(got.bytes, SIZE);
  assert.ok(readFileSync(p.dest).equals(FILE));
  assert.equal(s.count, 3);
  const ranges = s.requests.map((r) => [r.headers.range, r.headers['if-range']]);
  assert.equal(ranges[0]![0], undefined);
  assert.match(String(ranges[1]![0]), /^bytes=\d+-$/);
  assert.equal(ranges[1]![1], '"v1"');
  assert.ok(Number(/\d+/.exec(String(ranges[2]![0]))![0]) > Number(/\d+/.exec(String(ranges[1]![0]))![0]));
  assert.ok(lines.some((l) => /^warning: the connection to the server at 127\.0\.0\.1:\d+ broke after \d+ of 4194304 bytes.*trying again/.test(l)), lines.join(''));
});

test('Last-Modified serves as the validator when there is no ETag', async (t) => {
  const lastModified = new Date(Date.now() - 3600_000).toUTCString();
  const s = await serve(t, (req, res, count) => sendFile(req, res, FILE, { lastModified, ranges: true, dropAfter: count === 1 ? 500_000 : undefined }));
  const p = paths();
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: FILE_SHA, maxBytes: 2 * SIZE }, { log: quiet().log });
  assert.equal(got.resumed, 1);
  assert.equal(s.requests[1]!.headers['if-range'], lastModified);
  assert.ok(readFileSync(p.dest).equals(FILE));
});

test('a server that ignores Range (answers 200): starts again from zero, still correct', async (t) => {
  const s = await serve(t, (req, res, count) => sendFile(req, res, FILE, { etag: '"v1"', dropAfter: count === 1 ? 2_000_000 : undefined }));
  const p = paths();
  const { log, lines } = quiet();
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: FILE_SHA, maxBytes: 2 * SIZE }, { log });
  assert.equal(got.resumed, 0);
  assert.equal(got.sha256, FILE_SHA);
  assert.ok(readFileSync(p.dest).equals(FILE));
  assert.match(String(s.requests[1]!.headers.range), /^bytes=[1-9]\d*-$/);
  assert.ok(lines.some((l) => /the server does not resume downloads: starting again from byte 0/.test(l)), lines.join(''));
});

test('a file that changed on the server (another ETag) starts again from zero', async (t) => {
  const other = randomBytes(SIZE / 2);
  const s = await serve(t, (req, res, count) =>
    count === 1 ? sendFile(req, res, FILE, { etag: '"v1"', ranges: true, dropAfter: 1_500_000 }) : sendFile(req, res, other, { etag: '"v2"', ranges: true }),
  );
  const p = paths();
  const { log, lines } = quiet();
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: sha(other), maxBytes: 2 * SIZE }, { log });
  assert.equal(got.resumed, 0);
  assert.equal(got.bytes, other.length);
  assert.ok(readFileSync(p.dest).equals(other));
  assert.equal(s.requests[1]!.headers['if-range'], '"v1"');
  assert.ok(lines.some((l) => /the file changed on the server: starting again from byte 0/.test(l)), lines.join(''));
});

test('a server that ignores If-Range and sends a part of another file: starts again from zero', async (t) => {
  const other = randomBytes(SIZE);
  const s = await serve(t, (req, res, count) => {
    if (count === 1) return sendFile(req, res, FILE, { etag: '"v1"', ranges: true, dropAfter: 1_000_000 });
    // Range honoured, If-Range not: a part of the new file under its new ETag.
    const start = Number(/\d+/.exec(req.headers.range ?? '0')![0]);
    res.writeHead(start ? 206 : 200, { etag: '"v2"', 'content-length': other.length - start, ...(start ? { 'content-range': `bytes ${start}-${other.length - 1}/${other.length}` } : {}) });
    res.end(other.subarray(start));
  });
  const p = paths();
  const got = await downloadIso({ url: s.url, dest: p.dest, maxBytes: 2 * SIZE, sha256: sha(other) }, { log: quiet().log });
  assert.equal(got.resumed, 0);
  assert.ok(readFileSync(p.dest).equals(other));
  assert.equal(s.count, 3);
});

test('a connection that ends before Content-Length, every time: truncated, after the retries', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE, { etag: '"v1"', ranges: true, dropAfter: req.headers.range ? 0 : 1_000_000 }));
  const p = paths();
  const msg = await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: FILE_SHA, retries: 2 }, 'E_ISO_TRUNCATED', /^the download is truncated: the connection to the server at 127\.0\.0\.1:\d+ broke after \d+ of 4194304 bytes/);
  assert.match(msg, / bytes, 3 times in a row without progress: try again later or another mirror; nothing is booted$/);
  assert.equal(s.count, 3);
});

test('endless data without Content-Length stops at maxBytes', async (t) => {
  const chunk = randomBytes(64 * 1024);
  let sent = 0;
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const more = (): void => {
      while (!res.destroyed && res.write(chunk)) sent += chunk.length;
      if (!res.destroyed) res.once('drain', more);
    };
    more();
  });
  const p = paths();
  await refused(p, { url: s.url, maxBytes: 1_000_000, sha256: FILE_SHA }, 'E_ISO_TOO_BIG', /^the server at 127\.0\.0\.1:\d+ sent more than 1000000 bytes without saying how many, more than the RAM allows: stopped; nothing is booted$/);
  assert.ok(sent < 16 * 1024 * 1024, `the server sent ${sent} bytes`);
});

test('more bytes than Content-Length: only the announced bytes are taken', async (t) => {
  const s = await serve(t, (_req, res) => {
    const socket = res.socket!;
    socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${SIZE}\r\nconnection: close\r\n\r\n`);
    socket.write(FILE);
    socket.end(randomBytes(100_000));
  });
  const p = paths();
  const got = await downloadIso({ url: s.url, dest: p.dest, maxBytes: 2 * SIZE, sha256: FILE_SHA }, { log: quiet().log });
  assert.equal(got.bytes, SIZE);
});

test('a Content-Length above maxBytes is refused before the body', async (t) => {
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': 10 * SIZE });
    res.write(FILE.subarray(0, 1000));
  });
  const p = paths();
  let progress = 0;
  await refused(p, { url: s.url, maxBytes: SIZE, sha256: FILE_SHA, onProgress: () => progress++ }, 'E_ISO_TOO_BIG', new RegExp(`^the ISO at ${s.url} is ${10 * SIZE} bytes, more than the ${SIZE} the RAM allows: refused before downloading`));
  assert.equal(progress, 0);
});

test('a server that sends the headers and then nothing gives up after the stall timeout', async (t) => {
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': SIZE });
    res.flushHeaders();
  });
  const p = paths();
  const started = Date.now();
  const msg = await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: FILE_SHA, stallTimeoutMs: 200, retries: 1 }, 'E_ISO_STALLED', /^the server at 127\.0\.0\.1:\d+ sent nothing for 200 ms after 0 of 4194304 bytes, 2 times in a row without progress: check the network/);
  const took = Date.now() - started;
  assert.ok(took >= 400 && took < 3000, `${took} ms: ${msg}`);
  assert.equal(s.count, 2);
});

test('a server that goes quiet mid-file counts as a dropped connection: resumed', async (t) => {
  const s = await serve(t, (req, res, count) => {
    if (count > 1) return sendFile(req, res, FILE, { etag: '"v1"', ranges: true });
    res.writeHead(200, { etag: '"v1"', 'content-length': SIZE });
    res.write(FILE.subarray(0, 1_000_000));
  });
  const p = paths();
  const { log, lines } = quiet();
  const got = await downloadIso({ url: s.url, dest: p.dest, sha256: FILE_SHA, maxBytes: 2 * SIZE, stallTimeoutMs: 200 }, { log });
  assert.equal(got.resumed, 1);
  assert.ok(readFileSync(p.dest).equals(FILE));
  assert.ok(lines.some((l) => /sent nothing for 200 ms after 1000000 of 4194304 bytes; trying again in 250 ms \(1 of 5\)/.test(l)), lines.join(''));
});

test('a full file system (ENOSPC: on a tmpfs, the RAM) is one line, and nothing is left', async (t) => {
  const s = await serve(t, (req, res) => sendFile(req, res, FILE));
  const p = paths();
  symlinkSync('/dev/full', p.partial);
  await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: FILE_SHA }, 'E_ISO_WRITE', /failed after 0 bytes: no space left on the device \(ENOSPC\): free memory or choose a smaller image$/);
});

test('404 and 500 are one line each with what to do; 503 is tried again', async (t) => {
  const s = await serve(t, (req, res, count) => {
    if (req.url === '/gone.iso') res.writeHead(404).end('not here');
    else if (req.url === '/broken.iso') res.writeHead(500).end('oops');
    else if (count === 3) res.writeHead(503).end('later');
    else sendFile(req, res, FILE);
  });
  const p = paths();
  await refused(p, { url: `${s.base}/gone.iso`, maxBytes: 2 * SIZE, sha256: FILE_SHA }, 'E_ISO_HTTP', new RegExp(`^${s.base}/gone\\.iso answered 404 Not Found: check the URL`));
  await refused(p, { url: `${s.base}/broken.iso`, maxBytes: 2 * SIZE, sha256: FILE_SHA }, 'E_ISO_HTTP', new RegExp(`^${s.base}/broken\\.iso answered 500 Internal Server Error: the server is failing; try again later or another mirror$`));
  const got = await downloadIso({ url: s.url, dest: p.dest, maxBytes: 2 * SIZE, sha256: FILE_SHA }, { log: quiet().log });
  assert.equal(got.bytes, SIZE);
  assert.equal(s.count, 4);
});

test('redirects: followed up to five, relative and across servers; more refused; HTTPS to HTTP only with a checksum', async (t) => {
  const plain = await serve(t, (req, res) => sendFile(req, res, FILE));
  const secure = await serve(t, (req, res) => {
    const m = /^\/hop(\d+)$/.exec(req.url ?? '');
    if (req.url === '/to-http') res.writeHead(302, { location: plain.url }).end();
    else if (m) res.writeHead(Number(m[1]) % 2 ? 301 : 307, { location: Number(m[1]) === 1 ? '/image.iso' : `hop${Number(m[1]) - 1}` }).end();
    else sendFile(req, res, FILE);
  }, { https: true });
  const p = paths();
  const got = await downloadIso({ url: `${secure.base}/hop5`, dest: p.dest, maxBytes: 2 * SIZE, ca: tls.cert }, { log: quiet().log });
  assert.equal(got.sha256, FILE_SHA);
  rmSync(p.dest);
  await refused(p, { url: `${secure.base}/hop6`, maxBytes: 2 * SIZE, ca: tls.cert }, 'E_ISO_REDIRECT', /redirects more than 5 times: check the URL, or give the final one$/);
  await refused(p, { url: `${secure.base}/to-http`, maxBytes: 2 * SIZE, ca: tls.cert }, 'E_ISO_REDIRECT', /redirects from HTTPS to plain HTTP .*give --sha256 HEX to allow it$/);
  assert.equal(plain.count, 0);
  const viaHttp = await downloadIso({ url: `${secure.base}/to-http`, dest: p.dest, maxBytes: 2 * SIZE, ca: tls.cert, sha256: FILE_SHA }, { log: quiet().log });
  assert.equal(viaHttp.bytes, SIZE);
});

test('abort through the signal mid-download leaves nothing', async (t) => {
  const s = await serve(t, (_req, res) => {
    res.writeHead(200, { 'content-length': SIZE });
    res.write(FILE.subarray(0, 300_000));
  });
  const p = paths();
  const stop = new AbortController();
  const started = Date.now();
  await refused(p, { url: s.url, maxBytes: 2 * SIZE, sha256: FILE_SHA, signal: stop.signal, onProgress: () => setTimeout(() => stop.abort(), 50) }, 'E_ABORTED', /^interrupted$/);
  assert.ok(Date.now() - started < 2000);
});
