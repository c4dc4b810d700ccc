// startNbdServer as other subsystems use it: addresses, notifications,
// timeouts, shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { execFileSync } from 'node:child_process';
import { DEFAULT_KEEPALIVE_IDLE_MS, startNbdServer, type NbdConnectionInfo } from '../../src/nbd/server';
import { silentLogger } from '../../src/log';
import { connectClient } from '../helpers/nbd-client';

const MiB = 1024 * 1024;

test('listening on :: takes IPv4 and IPv6 clients and reports each peer as it is', async () => {
  const peers: string[] = [];
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '::', port: 0 }, onConnect: (c) => peers.push(`${c.peer.family} ${c.peer.address}`) },
    { log: silentLogger },
  );
  try {
    assert.ok(server.address.kind === 'tcp' && server.address.port > 0);
    const port = server.address.kind === 'tcp' ? server.address.port : 0;
    for (const host of ['127.0.0.1', '::1']) {
      const { client, socket } = await connectClient({ port, host });
      await client.handshake();
      assert.equal((await client.read(0, 512)).error, 0);
      client.disconnect();
      await client.waitClosed();
      socket.destroy();
    }
    assert.deepEqual(peers, ['IPv4 127.0.0.1', 'IPv6 ::1']);
  } finally {
    await server.close();
  }
});

test('a silent client is kept for the whole keepalive idle time: a pulled cable of up to 10 min does not end the connection', async () => {
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 } },
    { log: silentLogger },
  );
  try {
    const port = server.address.kind === 'tcp' ? server.address.port : 0;
    const { client, socket } = await connectClient({ port, host: '127.0.0.1' });
    await client.handshake();
    // The kernel's own view of the server's end: ss shows the keepalive timer
    // (e.g. timer:(keepalive,10min59sec,0)), set when the socket went idle.
    // Until the client's delayed ACK of the handshake, the retransmit timer shows instead.
    let line = '';
    let m: RegExpExecArray | null = null;
    for (let i = 0; i < 50 && !m; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 50));
      line = execFileSync('ss', ['-tnoH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
      m = /timer:\(keepalive,(?:(\d+)min)?(?:(\d+)(?:\.\d+)?sec)?(?:(\d+)ms)?/.exec(line);
    }
    assert.ok(m, `no keepalive timer on the server's socket: ${line}`);
    const seconds = Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0) + Number(m[3] ?? 0) / 1000;
    assert.ok(DEFAULT_KEEPALIVE_IDLE_MS >= 10 * 60_000);
    // ss shows whole minutes above one minute.
    assert.ok(seconds >= DEFAULT_KEEPALIVE_IDLE_MS / 1000 - 60, `keepalive fires after ${seconds} s of silence, not ${DEFAULT_KEEPALIVE_IDLE_MS / 1000} s`);
    client.disconnect();
    await client.waitClosed();
    socket.destroy();
  } finally {
    await server.close();
  }
});

test('a client that never finishes the handshake is disconnected after the timeout', async () => {
  const gone: Array<[NbdConnectionInfo, string]> = [];
  const server = await startNbdServer(
    {
      exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }],
      listen: { kind: 'tcp', host: '127.0.0.1', port: 0 },
      handshakeTimeoutMs: 300,
      onDisconnect: (c, reason) => gone.push([c, reason]),
    },
    { log: silentLogger },
  );
  try {
    const port = server.address.kind === 'tcp' ? server.address.port : 0;
    const sock = net.connect({ port, host: '127.0.0.1' });
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('error', () => undefined);
    sock.resume();
    await closed;
    for (let i = 0; i < 50 && gone.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(gone.length, 1);
    assert.equal(gone[0]![1], 'handshake timed out');
    assert.equal(server.connections().length, 0);
  } finally {
    await server.close();
  }
});

test('the abort signal closes the server: new connections are refused, open ones end', async () => {
  const ac = new AbortController();
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 } },
    { log: silentLogger, signal: ac.signal },
  );
  const port = server.address.kind === 'tcp' ? server.address.port : 0;
  const { client } = await connectClient({ port });
  await client.handshake();
  assert.equal(server.connections().length, 1);
  ac.abort();
  await server.closed;
  await client.waitClosed();
  await assert.rejects(connectClient({ port }), /ECONNREFUSED/);
});

test("close() just after a client's NBD_CMD_DISC ends with that connection, without waiting out the close timeout", async () => {
  const server = await startNbdServer(
    { exports: [{ name: 'd', backend: new MemoryBackend({ size: MiB }) }], listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, closeTimeoutMs: 60_000 },
    { log: silentLogger },
  );
  const { client, socket } = await connectClient({ port: server.address.kind === 'tcp' ? server.address.port : 0 });
  await client.handshake({ name: 'd' });
  client.disconnect();
  await client.waitClosed();
  socket.destroy();
  // The server's end of it is still closing (it waits for the client's end): the moment a shutdown used to hide that end.
  const closed = server.close().then(() => 'closed');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise((r) => (timer = setTimeout(r, 20_000, 'late')));
  assert.equal(await Promise.race([closed, late]), 'closed', 'close() did not wait for the 60 s close timeout');
  clearTimeout(timer);
});
