// Reading an ISO over HTTP ranges (src/iso/http-source.ts), against Node's
// own HTTP server: bytes at any offset as the file has them, a redirect
// followed, the menus of a real ISO (xorriso) read without a download, and
// the one-line errors: a server that ignores ranges, a file that changes
// while it is read.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openHttpIsoSource } from '../../src/iso/http-source';
import { inspectIso } from '../../src/iso/inspect';
import { requireTool } from '../helpers/tools';

let server: Server;
let base: string;
let dir: string;
const files = new Map<string, Buffer>();
let etag = '"1"';
const requests: string[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'stf-http-source-'));
  files.set('/random.bin', randomBytes(3 * 1024 * 1024 + 17));
  server = createServer((req, res) => {
    requests.push(`${req.url} ${req.headers.range ?? ''}`);
    if (req.url === '/moved.bin') return void res.writeHead(302, { location: '/random.bin' }).end();
    const ignore = req.url?.startsWith('/ignore/');
    const body = files.get(ignore ? req.url!.slice('/ignore'.length) : req.url!);
    if (!body) return void res.writeHead(404).end();
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!m || ignore) return void res.writeHead(200, { 'content-length': body.length }).end(body);
    const first = Number(m[1]);
    const last = Math.min(Number(m[2]), body.length - 1);
    res.writeHead(206, { 'content-range': `bytes ${first}-${last}/${body.length}`, etag, 'content-length': last - first + 1 });
    res.end(body.subarray(first, last + 1));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

test('bytes at any offset are the file\'s, across blocks; a redirect is followed', async () => {
  const body = files.get('/random.bin')!;
  const src = await openHttpIsoSource(`${base}/moved.bin`);
  assert.equal(src.size, body.length);
  assert.equal(src.url, `${base}/random.bin`);
  for (const [offset, length] of [[0, 10], [262_140, 10], [1_000_000, 700_000], [body.length - 5, 100], [body.length, 10]] as const) {
    assert.deepEqual(await src.read(offset, length), body.subarray(offset, Math.min(body.length, offset + length)), `at ${offset}`);
  }
  await src.close();
});

test("an ISO's menus are read over ranges, without the whole file", async () => {
  requireTool('xorriso');
  const tree = join(dir, 'tree');
  mkdirSync(join(tree, 'isolinux'), { recursive: true });
  mkdirSync(join(tree, 'live'), { recursive: true });
  writeFileSync(join(tree, 'isolinux', 'isolinux.cfg'), 'default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.img boot=live components\n');
  writeFileSync(join(tree, 'live', 'vmlinuz'), 'k');
  writeFileSync(join(tree, 'live', 'initrd.img'), 'i');
  writeFileSync(join(tree, 'live', 'filesystem.squashfs'), randomBytes(8 * 1024 * 1024));
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', join(dir, 'live.iso'), '-J', '-R', tree], { stdio: 'ignore' });
  files.set('/live.iso', execFileSync('cat', [join(dir, 'live.iso')], { maxBuffer: 64 * 1024 * 1024 }));
  requests.length = 0;
  const src = await openHttpIsoSource(`${base}/live.iso`);
  const r = await inspectIso(src);
  assert.equal(r.distro.id, 'debian-live');
  assert.deepEqual(r.entries.map((e) => [e.kernel, e.cmdline]), [['/live/vmlinuz', 'boot=live components']]);
  assert.ok(requests.length < 10, `${requests.length} requests`);
  assert.ok(requests.every((q) => /bytes=\d+-\d+$/.test(q)), 'only ranges were asked for');
});

test('one-line errors: a server without ranges, a file that changes, a missing file', async () => {
  await assert.rejects(openHttpIsoSource(`${base}/ignore/random.bin`), /127\.0\.0\.1:\d+\/ignore\/random\.bin answered 200 without a byte range, so it cannot be looked into before the download/);
  await assert.rejects(openHttpIsoSource(`${base}/nothing.iso`), /answered 404 without a byte range/);
  const src = await openHttpIsoSource(`${base}/random.bin`);
  etag = '"2"';
  try {
    await assert.rejects(src.read(2_000_000, 10), /changed while it was read/);
  } finally {
    etag = '"1"';
  }
});
