// startNbdServer as other subsystems use it: addresses, notifications,
// timeouts, shutdown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { startNbdServer, type NbdConnectionInfo } from '../../src/nbd/server';
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
