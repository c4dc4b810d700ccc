// The real `stiefelctl nbd-serve` under the floods of a hostile but fair
// client, measured from outside as the laptop would feel them: the server's
// peak RSS (VmHWM in /proc/PID/status, reset once it is up), the bytes it
// read (rchar), its child processes, the file's bytes. Each flood took the
// server to hundreds of megabytes or gigabytes (or 300 processes, or 32 GB
// read) before the memory budget, the prefetcher and the fallocate queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { serve, tempDir, type ServeProcess } from '../helpers/nbd-serve';
import { makeExtentImage, sha256 } from '../helpers/nbd-images';
import {
  ProcessProbe,
  blockStatusFlood,
  cacheFlood,
  maxChildren,
  optionInfoFlood,
  readFlood,
  trimFlood,
  writeAfterDisc,
  zeroReadFlood,
  type FloodTarget,
} from '../helpers/nbd-floods';
import { connectClient, blockStatusExtents } from '../helpers/nbd-client';
import { requireTool } from '../helpers/tools';
import * as P from '../../src/nbd/protocol';

const MB = 1e6;
const MiB = 1024 * 1024;

interface Served {
  s: ServeProcess;
  target: FloodTarget;
  probe: ProcessProbe;
  file: string;
  /** Resident memory once up and warmed by one client, before the flood. */
  rssBefore: number;
  cleanup: () => Promise<void>;
}

/** nbd-serve on a 128 MiB file of 4,096 extents, warmed up, its peak RSS reset. */
async function served(): Promise<Served> {
  const { dir, cleanup } = tempDir('flood');
  const file = join(dir, 'extents.img');
  makeExtentImage(file, 128, 4096);
  const s = await serve(file, ['--name', 'disk']);
  const target = { port: s.port, exportName: 'disk' };
  const probe = new ProcessProbe(s.proc.pid!);
  // Code paths loaded and the hole map taken before the peak is reset.
  await blockStatusFlood(target, { count: 2, read: true });
  await probe.settle(300, 3000);
  const rssBefore = probe.rss();
  probe.resetPeak();
  return {
    s,
    target,
    probe,
    file,
    rssBefore,
    cleanup: async () => {
      await s.stop('SIGKILL');
      cleanup();
    },
  };
}

/** Peak RSS growth during the flood, once the server's memory settled. */
async function growth(x: Served): Promise<number> {
  await x.probe.settle(500, 10_000);
  assert.equal(x.s.proc.exitCode, null, `the server died: ${x.s.stderr()}`);
  return x.probe.peakRss() - x.rssBefore;
}

test('100,000 block status requests whose replies are not read: the server holds tens of MB, not gigabytes', async () => {
  const x = await served();
  try {
    await blockStatusFlood(x.target, { count: 100_000, read: false, hold: async () => void (await growth(x)) });
    const grew = await growth(x);
    assert.ok(grew < 250 * MB, `peak RSS grew by ${(grew / MB).toFixed(0)} MB`);
  } finally {
    await x.cleanup();
  }
});

test('20,000 block status requests over the whole export, replies read: bounded, and each reply at most 1,024 extents', async () => {
  const x = await served();
  try {
    const r = await blockStatusFlood(x.target, { count: 20_000, read: true });
    assert.equal(r.replies, 20_000);
    const grew = await growth(x);
    assert.ok(grew < 250 * MB, `peak RSS grew by ${(grew / MB).toFixed(0)} MB`);
    const { client, socket } = await connectClient(x.target);
    await client.handshake({ name: 'disk' });
    const extents = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 128 * MiB }));
    assert.equal(extents.length, 1024);
    socket.destroy();
  } finally {
    await x.cleanup();
  }
});

test('40 reads of 32 MiB in one packet, and 3,000 reads of 1 MiB: not all held at once', async () => {
  const x = await served();
  try {
    // Read replies may fill the server's budget (256 MiB in flight, src/nbd/server.ts), plus
    // what the heap keeps until the collector runs: far below the 1.3 GB and 3 GB asked for.
    const bound = 256 * MiB + 128 * MB;
    assert.equal((await readFlood(x.target, { count: 40, length: 32 * MiB })).replies, 40);
    const grew = await growth(x);
    assert.ok(grew < bound, `40 x 32 MiB: peak RSS grew by ${(grew / MB).toFixed(0)} MB`);
    assert.equal((await readFlood(x.target, { count: 3000, length: MiB })).replies, 3000);
    const grew2 = await growth(x);
    assert.ok(grew2 < bound, `3,000 x 1 MiB: peak RSS grew by ${(grew2 / MB).toFixed(0)} MB`);
  } finally {
    await x.cleanup();
  }
});

test('500 cache requests of 64 MiB in one packet: answered, without reading 32 GB or allocating per request', async () => {
  const x = await served();
  try {
    const before = x.probe.bytesRead();
    assert.equal((await cacheFlood(x.target, { count: 500, length: 64 * MiB })).replies, 500);
    // Prefetching goes on after the replies.
    await new Promise((r) => setTimeout(r, 1000));
    const read = x.probe.bytesRead() - before;
    assert.ok(read < 1e9, `${(read / 1e9).toFixed(1)} GB read from the file`);
    const grew = await growth(x);
    assert.ok(grew < 100 * MB, `peak RSS grew by ${(grew / MB).toFixed(0)} MB`);
  } finally {
    await x.cleanup();
  }
});

test('300 adjacent trims in one packet: at most two fallocate processes at once, every range punched', async () => {
  requireTool('fallocate');
  const x = await served();
  try {
    // Make the first 300 x 64 KiB all data, then trim it.
    writeFileSync(x.file, Buffer.alloc(300 * 65536, 0x77), { flag: 'r+' });
    const flood = trimFlood(x.target, { count: 300, length: 65536 });
    const most = await maxChildren(x.probe, flood);
    const r = await flood;
    assert.equal(r.replies, 300);
    assert.equal(r.note, undefined);
    assert.ok(most <= 2, `${most} child processes at once`);
    const { client, socket } = await connectClient(x.target);
    await client.handshake({ name: 'disk' });
    const map = blockStatusExtents(await client.request({ type: P.NBD_CMD_BLOCK_STATUS, offset: 0, length: 300 * 65536 }));
    assert.deepEqual(map[0], [300 * 65536, P.NBD_STATE_HOLE | P.NBD_STATE_ZERO]);
    socket.destroy();
  } finally {
    await x.cleanup();
  }
});

test('millions of zero-length reads whose replies are not read: the server stops reading instead of growing', async () => {
  const x = await served();
  try {
    let grewWhileOpen = 0;
    const r = await zeroReadFlood(x.target, { count: 9_000_000, stallMs: 1500, hold: async () => void (grewWhileOpen = await growth(x)) });
    assert.ok(grewWhileOpen < 150 * MB, `peak RSS grew by ${(grewWhileOpen / MB).toFixed(0)} MB after ${(r.sent / 1e6).toFixed(1)}M requests`);
  } finally {
    await x.cleanup();
  }
});

test('a million NBD_OPT_INFO in the handshake, answers not read: reading stops, memory stays put', async () => {
  const x = await served();
  try {
    let grewWhileOpen = 0;
    const r = await optionInfoFlood(x.target, { count: 1_000_000, stallMs: 1500, hold: async () => void (grewWhileOpen = await growth(x)) });
    assert.ok(grewWhileOpen < 40 * MB, `peak RSS grew by ${(grewWhileOpen / MB).toFixed(0)} MB after ${(r.sent / 1e6).toFixed(2)}M options`);
  } finally {
    await x.cleanup();
  }
});

test('a write after NBD_CMD_DISC in the same packet does not reach the file', async () => {
  const x = await served();
  try {
    const before = sha256(x.file);
    await writeAfterDisc(x.target, Buffer.alloc(4096, 0xee));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sha256(x.file), before);
    assert.equal(x.s.proc.exitCode, null);
  } finally {
    await x.cleanup();
  }
});
