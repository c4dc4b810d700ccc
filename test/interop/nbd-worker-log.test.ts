// A worker process's debug lines (src/nbd/worker-process.ts) cross the IPC
// channel only when the main process shows them. A client whose every
// request fails makes one debug line per request; were they all sent, a
// flood of such requests would queue messages without bound in the worker
// while the main process threw them away. The worker here runs in this
// process with a recording channel in place of Node's IPC, on a real unix
// socket and a real file; then the real `nbd-serve --workers 1` shows that
// the main process asks for the lines STIEFEL_DEBUG enables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as P from '../../src/nbd/protocol';
import { DEFAULT_BLOCK_SIZE } from '../../src/nbd/server';
import { runNbdWorker, type WorkerIpc } from '../../src/nbd/worker-process';
import type { FromWorker, ToWorker } from '../../src/nbd/worker-messages';
import { connectClient } from '../helpers/nbd-client';
import { serve, tempDir } from '../helpers/nbd-serve';

const MiB = 1024 * 1024;
const FAILING = 2000;

interface Recorded {
  sent: FromWorker[];
  deliver(message: ToWorker, handle?: unknown): void;
  disconnect(): void;
  exited: Promise<number>;
}

function recordingIpc(): { ipc: WorkerIpc; rec: Recorded } {
  let handler: ((m: ToWorker, h: unknown) => void) | undefined;
  let onGone: (() => void) | undefined;
  let exit!: (code: number) => void;
  const rec: Recorded = {
    sent: [],
    deliver: (m, h) => handler!(m, h),
    disconnect: () => onGone!(),
    exited: new Promise((r) => (exit = r)),
  };
  const ipc: WorkerIpc = {
    send: (m) => void rec.sent.push(m),
    on: (h) => (handler = h),
    onDisconnect: (h) => (onGone = h),
    exit: (code) => exit(code),
  };
  return { ipc, rec };
}

async function until(what: string, ok: () => boolean, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A worker serving a 1 MiB file; FAILING reads past its end; what the worker sent meanwhile. */
async function floodWorker(debugging: string[]): Promise<{ errors: number; sent: FromWorker[] }> {
  const { dir, cleanup } = tempDir('worker-log');
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(MiB));
  const { ipc, rec } = recordingIpc();
  const listener = net.createServer({ pauseOnConnect: true });
  try {
    runNbdWorker(ipc);
    rec.deliver({
      t: 'init',
      exports: [{ name: 'disk', path: disk, readOnly: false }],
      blockSize: DEFAULT_BLOCK_SIZE,
      maxInflightBytes: 64 * MiB,
      maxServerInflightBytes: 64 * MiB,
      handshakeTimeoutMs: 10000,
      debugging,
    });
    await until('the worker to be ready', () => rec.sent.some((m) => m.t === 'ready'));
    const path = join(dir, 'nbd.sock');
    listener.on('connection', (socket) => rec.deliver({ t: 'conn', id: 1 }, socket));
    await new Promise<void>((r) => listener.listen(path, r));
    const { client, socket } = await connectClient({ path });
    await client.handshake({ name: 'disk' });
    const replies = await Promise.all(Array.from({ length: FAILING }, () => client.read(2 * MiB, 4096)));
    socket.destroy();
    rec.disconnect();
    assert.equal(await rec.exited, 0);
    return { errors: replies.filter((r) => r.error !== 0).length, sent: rec.sent };
  } finally {
    listener.close();
    cleanup();
  }
}

test('a worker sends no debug lines the main process does not show, however many requests fail', async () => {
  const quiet = await floodWorker([]);
  assert.equal(quiet.errors, FAILING, 'every read past the end failed');
  const debugLines = quiet.sent.filter((m) => m.t === 'log' && m.level === 'debug');
  assert.equal(debugLines.length, 0, `debug lines sent: ${JSON.stringify(debugLines.slice(0, 3))}`);
  assert.ok(quiet.sent.length < 20, `messages sent for ${FAILING} failed requests: ${quiet.sent.length}`);

  // The same flood with the connection's debug lines shown: one line per failed request.
  const shown = await floodWorker(['conn']);
  const failed = shown.sent.filter((m) => m.t === 'log' && m.level === 'debug' && m.ns.join(':') === 'conn' && /^NBD_CMD_READ 2097152\+4096: .*beyond the end/.test(m.message));
  assert.equal(failed.length, FAILING);
});

test('nbd-serve --workers 1: STIEFEL_DEBUG=nbd:conn shows the worker\'s failed requests, and without it the server says nothing of them', async () => {
  const { dir, cleanup } = tempDir('worker-log');
  const disk = join(dir, 'disk.img');
  writeFileSync(disk, Buffer.alloc(MiB));
  try {
    for (const debug of ['nbd:conn', '']) {
      const s = await serve(disk, ['--workers', '1'], { env: { STIEFEL_DEBUG: debug } });
      try {
        const { client, socket } = await connectClient({ port: s.port });
        await client.handshake();
        const r = await client.request({ type: P.NBD_CMD_READ, offset: 2 * MiB, length: 4096 });
        assert.notEqual(r.error, 0);
        socket.destroy();
        if (debug) await until('the debug line', () => /\[nbd:conn\] NBD_CMD_READ 2097152\+4096: .*beyond the end/.test(s.stderr()));
      } finally {
        assert.equal((await s.stop()).code, 0, s.stderr());
      }
      if (!debug) assert.doesNotMatch(s.stderr(), /beyond the end/);
    }
  } finally {
    cleanup();
  }
});
