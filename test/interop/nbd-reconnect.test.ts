// A desktop that reconnects its disk: the server's side of a pulled cable
// that outlasted the desktop kernel's request timeout. The desktop's kernel
// gave its connection up and stiefel-nbd-reconnect (the laptop OS's helper,
// assets/server-os/stiefel-nbd-reconnect) opened a new one from the same
// address, while the server's end of the old one still looks alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import type { WriteOptions } from '../../src/nbd/backend';
import { startNbdServer } from '../../src/nbd/server';
import { silentLogger } from '../../src/log';
import { readAsset } from '../../src/assets';
import { connectClient } from '../helpers/nbd-client';
import { requireTool } from '../helpers/tools';

const MiB = 1024 * 1024;

/** Writes wait for `release()` while held: a write the server is still carrying out. */
class HeldWrites extends MemoryBackend {
  #held: Promise<void> | undefined;
  #release: (() => void) | undefined;
  hold(): void {
    this.#held = new Promise((r) => (this.#release = r));
  }
  release(): void {
    this.#release?.();
    this.#held = undefined;
  }
  override async pwrite(data: readonly Buffer[], offset: number, options: WriteOptions): Promise<void> {
    const held = this.#held;
    if (held) await held;
    return super.pwrite(data, offset, options);
  }
}

const port = (a: { kind: string; port?: number }): number => (a.kind === 'tcp' ? a.port! : 0);

test("a second connection from the same desktop replaces its first, and is served only once the first one's write has finished", async () => {
  const backend = new HeldWrites({ size: MiB });
  const server = await startNbdServer({ exports: [{ name: 'd', backend }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, maxConnectionsPerPeer: 1, replaceSilentMs: 0 }, { log: silentLogger });
  try {
    const first = await connectClient({ port: port(server.address), host: '127.0.0.1' });
    await first.client.handshake({ name: 'd' });
    backend.hold();
    // The old connection's last write: received, still being carried out.
    const oldWrite = first.client.write(0, Buffer.alloc(4096, 'A')).then(
      () => 'answered',
      (err: Error) => err.message,
    );
    await new Promise((r) => setTimeout(r, 100));

    const second = await connectClient({ port: port(server.address), host: '127.0.0.1' });
    let greeted = false;
    const greeting = second.client.greeting().then(() => (greeted = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(greeted, false, 'the new connection waits while the old one still writes');
    assert.equal(server.connections().length, 2);

    backend.release();
    await greeting;
    second.client.sendClientFlags();
    const go = await second.client.option(7, goData('d'));
    assert.equal(go.at(-1)?.type, 1, 'NBD_OPT_GO acknowledged on the new connection');
    await first.client.waitClosed();
    // The old connection was cut with its write in flight: no reply reached it.
    assert.match(await oldWrite, /connection closed before the reply to NBD_CMD_WRITE/);
    assert.equal(server.connections().length, 1, 'only the new connection is left');

    assert.equal((await second.client.write(0, Buffer.alloc(4096, 'B'))).error, 0);
    const back = await second.client.read(0, 4096);
    assert.equal(back.error, 0);
    assert.ok(back.data!.equals(Buffer.alloc(4096, 'B')), "the new connection's write is the last word");
    second.client.disconnect();
    await second.client.waitClosed();
    first.socket.destroy();
    second.socket.destroy();
  } finally {
    backend.release();
    await server.close();
  }
});

test('a connection from another address does not replace the first desktop’s, and several allowed connections are all kept', async () => {
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, maxConnectionsPerPeer: 2, replaceSilentMs: 0 },
    { log: silentLogger },
  );
  try {
    const a = await connectClient({ port: port(server.address), host: '127.0.0.1' });
    await a.client.handshake({ name: 'd' });
    const b = await connectClient({ port: port(server.address), host: '127.0.0.1' });
    await b.client.handshake({ name: 'd' });
    assert.equal(server.connections().length, 2, 'two connections allowed per peer: both kept');
    const elsewhere = await connectClient({ port: port(server.address), host: '127.0.0.1', localAddress: '127.0.0.2' });
    await elsewhere.client.handshake({ name: 'd' });
    assert.equal(server.connections().length, 3, 'another address replaces nothing');
    for (const c of [a, b]) assert.equal((await c.client.read(0, 512)).error, 0);
    // A third from the first address: its oldest goes.
    const c = await connectClient({ port: port(server.address), host: '127.0.0.1' });
    await c.client.handshake({ name: 'd' });
    await a.client.waitClosed();
    assert.equal((await b.client.read(0, 512)).error, 0, 'the younger one is kept');
    for (const x of [b, c, elsewhere]) {
      x.client.disconnect();
      await x.client.waitClosed();
    }
    for (const x of [a, b, c, elsewhere]) x.socket.destroy();
  } finally {
    await server.close();
  }
});

test('a connection still in use is not replaced: a client that opens more connections than the limit (nbdcopy) keeps them all', async () => {
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, maxConnectionsPerPeer: 1 },
    { log: silentLogger },
  );
  try {
    const clients = [];
    for (let i = 0; i < 4; i++) {
      const c = await connectClient({ port: port(server.address), host: '127.0.0.1' });
      await c.client.handshake({ name: 'd' });
      assert.equal((await c.client.read(0, 512)).error, 0);
      clients.push(c);
    }
    assert.equal(server.connections().length, 4, 'none of them received nothing for 10 s: all kept');
    for (const c of clients) assert.equal((await c.client.read(4096, 512)).error, 0, 'each still served');
    for (const c of clients) {
      c.client.disconnect();
      await c.client.waitClosed();
      c.socket.destroy();
    }
  } finally {
    await server.close();
  }
});

test('a limit of connections per peer is a whole number, and not with worker processes', async () => {
  const exports = [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }];
  await assert.rejects(startNbdServer({ exports, listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, maxConnectionsPerPeer: 0 }, { log: silentLogger }), /at least 1, not 0/);
  const workers = { count: 1, spawn: () => assert.fail('no worker is started') };
  await assert.rejects(startNbdServer({ exports, listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, maxConnectionsPerPeer: 1, workers }, { log: silentLogger }), /cannot be kept with worker processes; use one or the other/);
});

// --- the desktop's helper, against this server ------------------------------

function runHelper(conf: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('/usr/bin/python3', [helperPath, ...args], { env: { ...process.env, STIEFEL_NBD_CONF: conf }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 99) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'stf-reconnect-'));
const helperPath = join(dir, 'stiefel-nbd-reconnect');
writeFileSync(helperPath, readAsset('server-os/stiefel-nbd-reconnect'), { mode: 0o755 });
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function conf(name: string, values: Record<string, string | number>): string {
  const path = join(dir, name);
  writeFileSync(path, Object.entries(values).map(([k, v]) => `${k}=${v}\n`).join(''));
  return path;
}

test('stiefel-nbd-reconnect (Python) negotiates the export with our server as the kernel will use it, and says why when it cannot', async () => {
  let refuse = false;
  const server = await startNbdServer(
    {
      exports: [{ name: 'laptop', backend: new MemoryBackend({ size: 3 * MiB }) }],
      listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
      admit: () => (refuse ? { refuse: 'busy with the desktop at fd00::2' } : true),
    },
    { log: silentLogger },
  );
  try {
    const p = port(server.address);
    const ok = await runHelper(conf('ok.conf', { STIEFEL_NBD_HOST: '127.0.0.1', STIEFEL_NBD_PORT: p, STIEFEL_NBD_EXPORT: 'laptop', STIEFEL_NBD_DEVICE: '/dev/nbd0' }), ['--check']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), `reached the laptop's disk at 127.0.0.1 port ${p}: ${3 * MiB} bytes`);

    const wrongName = await runHelper(conf('name.conf', { STIEFEL_NBD_HOST: '127.0.0.1', STIEFEL_NBD_PORT: p, STIEFEL_NBD_EXPORT: 'other', STIEFEL_NBD_DEVICE: '/dev/nbd0' }), ['--check']);
    assert.equal(wrongName.code, 1);
    assert.match(wrongName.stderr.trim(), /^stiefelsystem: the laptop refused the disk: .*'other'/);

    refuse = true;
    const busy = await runHelper(conf('busy.conf', { STIEFEL_NBD_HOST: '127.0.0.1', STIEFEL_NBD_PORT: p, STIEFEL_NBD_EXPORT: 'laptop', STIEFEL_NBD_DEVICE: '/dev/nbd0' }), ['--check']);
    assert.equal(busy.code, 1);
    assert.equal(busy.stderr.trim(), 'stiefelsystem: the laptop refused the disk: busy with the desktop at fd00::2');
  } finally {
    await server.close();
  }
  // Nobody listening: one line naming the address.
  const gone = await runHelper(conf('gone.conf', { STIEFEL_NBD_HOST: '127.0.0.1', STIEFEL_NBD_PORT: 1, STIEFEL_NBD_DEVICE: '/dev/nbd0' }), ['--check']);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr.trim(), /^stiefelsystem: cannot connect to 127\.0\.0\.1 port 1: Connection refused$/);
  // Its settings missing or wrong: one line naming the fix.
  const none = await runHelper(join(dir, 'absent.conf'), ['--check']);
  assert.equal(none.code, 1);
  assert.match(none.stderr.trim(), /^stiefelsystem: cannot read \S+absent\.conf \(No such file or directory\): this OS was not attached by stiefel-attach$/);
  const bad = await runHelper(conf('bad.conf', { STIEFEL_NBD_HOST: '127.0.0.1', STIEFEL_NBD_PORT: 1, STIEFEL_NBD_DEVICE: '/dev/sda' }), []);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr.trim(), /^stiefelsystem: \/dev\/sda is not an NBD device$/);
});

test('a reconnect attempt reads no file (strace): the helper runs while its own root file system is the disk that is gone', async () => {
  requireTool('strace');
  const server = await startNbdServer({ exports: [{ name: 'laptop', backend: new MemoryBackend({ size: 3 * MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 } }, { log: silentLogger });
  try {
    const p = port(server.address);
    // What the helper does before its first reconnect (its settings, the
    // address resolved, the kernel log open), then what it does after:
    // the reconnect loop (an attempt to nobody, then one that succeeds),
    // and an attempt that finds a disk of another size.
    const harness = join(dir, 'harness.py');
    writeFileSync(
      harness,
      [
        'import os, runpy, sys',
        `g = runpy.run_path(${JSON.stringify(helperPath)}, run_name='stiefel_nbd_reconnect')`,
        `ok = g['Laptop']({'STIEFEL_NBD_HOST': '127.0.0.1', 'STIEFEL_NBD_PORT': '${p}', 'STIEFEL_NBD_EXPORT': 'laptop'})`,
        `gone = g['Laptop']({'STIEFEL_NBD_HOST': '127.0.0.1', 'STIEFEL_NBD_PORT': '1'})`,
        "g['KMSG'].append(os.open('/dev/null', os.O_WRONLY))",
        "g['say']('armed')",
        'handed = []',
        // The reconnect loop as the helper runs it after NBD_CMD_LINK_DEAD, with the kernel's part
        // (netlink) left out: the laptop is away at the first attempt and back at the second.
        "R = g['Reconnector']",
        'r = R.__new__(R)',
        "r.conf, r.index, r.size, r.dead_timeout, r.dead, r.laptop = {'STIEFEL_NBD_HOST': '127.0.0.1', 'STIEFEL_NBD_PORT': '1'}, 0, " + String(3 * MiB) + ', 86400, 0, gone',
        'r.reconfigure = handed.append',
        'pauses = []',
        'def pause(wait):',
        '    pauses.append(wait)',
        '    r.laptop = ok',
        'r.take_events = pause',
        "os.write(2, b'MARK-START\\n')",
        'r.mend(lambda: len(pauses) > 3)',
        'try:',
        "    g['attempt'](ok, 12345, handed.append)",
        "except g['Failed'] as e:",
        "    g['say']('failed: %s' % e)",
        "os.write(2, b'MARK-END\\n')",
        "print(len(handed))",
      ].join('\n'),
    );
    const trace = join(dir, 'trace');
    // Not execFileSync: the server answering it runs in this process.
    const out = await new Promise<string>((resolve, reject) =>
      execFile('strace', ['-f', '-qq', '-s', '400', '-e', 'trace=%file,write', '-o', trace, '/usr/bin/python3', harness], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
      ),
    );
    assert.equal(out.trim(), '1', 'one attempt handed a socket over');
    const lines = readFileSync(trace, 'utf8').split('\n');
    const start = lines.findIndex((l) => l.includes('MARK-START'));
    const end = lines.findIndex((l) => l.includes('MARK-END'));
    assert.ok(start >= 0 && end > start, 'the markers are in the trace');
    const files = lines.slice(start + 1, end).filter((l) => !/ write\(/.test(l) && l.trim() !== '');
    assert.deepEqual(files, [], 'no file system call between the markers');
    const said = lines
      .slice(start + 1, end)
      .filter((l) => / write\(\d+, "stiefelsystem: /.test(l))
      .map((l) => /"stiefelsystem: (.*?)(\\n)?"/.exec(l)![1]);
    assert.deepEqual(said, [
      'nbd0 lost its connection to the laptop (127.0.0.1 port 1); reconnecting',
      'nbd0: the laptop is still unreachable after 0 s (cannot connect to 127.0.0.1 port 1: Connection refused); programs that use the disk wait, for up to 24 h',
      said[2],
      'failed: the laptop now serves 3145728 bytes, not the 12345 of this disk: not reconnected',
    ]);
    assert.match(said[2]!, /^nbd0 reconnected to the laptop after [\d.]+ s \(attempt 2\)$/);
  } finally {
    await server.close();
  }
});

function goData(name: string): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}
