// A dying desktop, in two VMs: the laptop OS runs on the desktop with its
// root on the laptop's disk (NBD through WireGuard) and writes a record a
// second, each fsynced before it is reported; after the fifth the desktop
// VM is killed (a power cut). The laptop's console must say it no longer
// hears the desktop (and not return by itself); its disk must be consistent
// once the journal is replayed (e2fsck), with every reported record on it.
// `npm run e2e -- power-cut`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { E2E_CACHE_DIR, runEndToEnd } from '../helpers/e2e';
import { requireRoot, requireTool } from '../helpers/tools';

test("the desktop's power cut mid-write: the laptop says so, and its disk holds every fsynced record, consistent", { timeout: 40 * 60_000 }, async () => {
  requireRoot();
  for (const tool of ['qemu-system-x86_64', 'debootstrap', 'mke2fs', 'sgdisk', 'e2fsck', 'losetup']) requireTool(tool);
  const started = Date.now();
  const result = await runEndToEnd({
    family: 'initramfs-tools',
    cacheDir: E2E_CACHE_DIR,
    wireguard: true,
    powerCut: { records: 20, atRecord: 5 },
    log: (line) => console.log(`[e2e power-cut ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`),
    timeScale: 3,
    consoleDir: '/tmp/stf6-e2e-consoles/power-cut',
  });
  const cut = result.powerCut!;
  console.log(`[e2e power-cut] ${JSON.stringify(cut)}`);
  assert.ok(cut.reported >= 5);
  // Every record reported (fsynced) before the cut is there; at most the one in flight more.
  assert.deepEqual(cut.onDisk.slice(0, cut.reported), Array.from({ length: cut.reported }, (_, i) => i + 1));
  assert.ok(cut.onDisk.length <= cut.reported + 1, `records on the disk: ${cut.onDisk.join(', ')}`);
  assert.ok(cut.noticedAfterSeconds < 90, `the laptop noticed after ${cut.noticedAfterSeconds} s`);
});
