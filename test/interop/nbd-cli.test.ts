// `stiefelctl nbd-serve` as a user meets it: one-line errors with a non-zero
// exit, clean shutdown on SIGINT/SIGTERM; and the library's admit hook as the
// `server` command will use it, seen through a real client (nbdinfo).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCli } from '../helpers/cli';
import { connectClient } from '../helpers/nbd-client';
import { requireTool } from '../helpers/tools';
import { serve, tempDir } from '../helpers/nbd-serve';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { startNbdServer, type NbdConnectionInfo } from '../../src/nbd/server';
import { silentLogger } from '../../src/log';

const MiB = 1024 * 1024;

/** Exactly one line on stderr, no stack trace. */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /\n\s+at /);
  return lines[0]!;
}

test('nbd-serve --help shows usage and examples', async () => {
  const r = await runCli(['nbd-serve', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: stiefelctl nbd-serve FILE/);
  assert.match(r.stdout, /Examples:\n\s+stiefelctl nbd-serve disk\.img/);
});

test('user errors: one line naming the fix, non-zero exit, nothing created', async () => {
  const { dir, cleanup } = tempDir('cli');
  try {
    const img = join(dir, 'd.img');
    writeFileSync(img, Buffer.alloc(MiB));
    const cases: Array<[string[], number, RegExp]> = [
      [['nbd-serve'], 2, /missing FILE/],
      [['nbd-serve', img, 'extra'], 2, /unexpected argument 'extra'/],
      [['nbd-serve', img, '--bogus'], 2, /Unknown option '--bogus'/],
      [['nbd-serve', join(dir, 'missing.img')], 1, /^stiefelctl nbd-serve: cannot open .*missing\.img: no such file or device; check the path$/],
      [['nbd-serve', dir], 1, /is not a regular file or a block device; give a disk image/],
      [['nbd-serve', img, '--listen', '127.0.0.1:99999'], 2, /bad --listen: '99999' is not a TCP port/],
      [['nbd-serve', img, '--listen', '[::1'], 2, /bad --listen: .*closing/],
      [['nbd-serve', img, '--listen', '203.0.113.7:0'], 1, /cannot listen on 203\.0\.113\.7:0: no network interface has that address/],
      [['nbd-serve', img, '--listen', '[fe80::1%nosuchif0]:0'], 1, /cannot listen on \[fe80::1%nosuchif0\]:0: there is no network interface 'nosuchif0'; see 'ip link'/],
      [['nbd-serve', img, '--listen', `unix:${join(dir, 'no', 'such', 'dir.sock')}`], 1, /cannot listen on unix:.*: the directory .* does not exist; create it first/],
      [['nbd-serve', img, '--listen', `unix:${img}`], 1, /exists and is not a socket/],
    ];
    for (const [args, code, re] of cases) {
      const r = await runCli(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(oneLine(r.stderr), re);
    }
  } finally {
    cleanup();
  }
});

test('a busy port is one line and exit 1; the other server is untouched', async () => {
  const { dir, cleanup } = tempDir('cli');
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as net.AddressInfo).port;
  try {
    const img = join(dir, 'd.img');
    writeFileSync(img, Buffer.alloc(MiB));
    const r = await runCli(['nbd-serve', img, '--listen', `127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assert.match(oneLine(r.stderr), new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use .*--listen`));
    assert.ok(blocker.listening);
  } finally {
    blocker.close();
    cleanup();
  }
});

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} stops the server cleanly: in-flight work answered, exit 0, socket file removed`, async () => {
    const { dir, cleanup } = tempDir('cli');
    const img = join(dir, 'd.img');
    writeFileSync(img, Buffer.alloc(4 * MiB));
    const sock = join(dir, 'nbd.sock');
    const s = await serve(img, [], { listen: `unix:${sock}` });
    try {
      const { client } = await connectClient({ path: sock });
      await client.handshake();
      assert.equal((await client.write(0, Buffer.alloc(MiB, 3))).error, 0);
      const exit = await s.stop(signal);
      assert.equal(exit.code, 0, s.stderr());
      await client.waitClosed();
      assert.match(s.stderr(), /stopped\n$/);
      assert.equal(existsSync(sock), false);
    } finally {
      await s.stop('SIGKILL');
      cleanup();
    }
  });
}

test('nbd-serve keeps serving when the reader of its stderr goes away (EPIPE on the next log line)', async () => {
  const { dir, cleanup } = tempDir('cli');
  const img = join(dir, 'd.img');
  writeFileSync(img, Buffer.alloc(MiB));
  const s = await serve(img);
  try {
    // Whoever read the log is gone: the next line ("client 1 ... connected") meets a broken pipe.
    s.proc.stderr!.destroy();
    for (let round = 0; round < 2; round++) {
      const { client, socket } = await connectClient({ port: s.port });
      await client.handshake();
      assert.equal((await client.write(4096, Buffer.from('still here'))).error, 0);
      assert.equal((await client.read(4096, 10)).data!.toString(), 'still here');
      client.disconnect();
      await client.waitClosed();
      socket.destroy();
    }
    assert.equal(s.proc.exitCode, null, 'the server is still running');
    assert.equal((await s.stop('SIGINT')).code, 0);
  } finally {
    await s.stop('SIGKILL');
    cleanup();
  }
});

test('admit hook: one client host at a time; others are refused with the reason (as nbdinfo shows it)', async () => {
  const nbdinfo = requireTool('nbdinfo');
  const { dir, cleanup } = tempDir('cli');
  mkdirSync(join(dir, 's'));
  let holder: string | undefined;
  let open = 0;
  const events: string[] = [];
  const server = await startNbdServer(
    {
      exports: [{ name: 'disk', backend: new MemoryBackend({ size: MiB }) }],
      listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
      admit: (peer) => {
        if (holder === undefined || holder === peer.address) {
          holder = peer.address;
          open++;
          return true;
        }
        return { refuse: `the disk is in use by ${holder}` };
      },
      onConnect: (c: NbdConnectionInfo) => events.push(`connect ${c.id}${c.refused ? ' refused' : ''}`),
      onDisconnect: (c: NbdConnectionInfo) => {
        events.push(`disconnect ${c.id}`);
        if (!c.refused && --open === 0) holder = undefined;
      },
    },
    { log: silentLogger },
  );
  try {
    // The first client's host (127.0.0.1) holds the disk; a second
    // connection from it is fine (multi-connection clients).
    const a = await connectClient({ port: server.address.kind === 'tcp' ? server.address.port : 0 });
    await a.client.handshake();
    const b = await connectClient({ port: server.address.kind === 'tcp' ? server.address.port : 0 });
    await b.client.handshake();
    assert.equal(server.connections().length, 2);
    assert.equal(server.connections()[0]!.peer.address, '127.0.0.1');
    // Another host: pretend by switching the holder.
    holder = '192.0.2.1';
    // libnbd shows the server's message in its debug output.
    const r = await promisify(execFile)(nbdinfo, [server.uri], { env: { ...process.env, LIBNBD_DEBUG: '1' } }).then(
      () => assert.fail('nbdinfo should have been refused'),
      (err: { stderr: string }) => err.stderr,
    );
    assert.match(r, /server error message: the disk is in use by 192\.0\.2\.1/);
    assert.match(r, /nbdinfo: nbd_opt_go: server replied with error/);
    assert.ok(events.some((e) => e.endsWith('refused')));
    // Live per-connection counters for a status display.
    await a.client.write(0, Buffer.alloc(4096, 1));
    await a.client.read(0, 4096);
    const info = server.connections().find((c) => !c.refused && c.stats.bytesWritten > 0)!;
    assert.equal(info.stats.bytesWritten, 4096);
    assert.equal(info.stats.bytesRead, 4096);
    assert.equal(info.stats.requests.NBD_CMD_WRITE, 1);
    assert.equal(info.stats.phase, 'transmission');
    a.client.disconnect();
    b.client.disconnect();
    await a.client.waitClosed();
    await b.client.waitClosed();
  } finally {
    await server.close();
    cleanup();
  }
  assert.ok(events.filter((e) => e.startsWith('disconnect')).length >= 3);
});
