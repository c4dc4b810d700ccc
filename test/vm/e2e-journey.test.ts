// The laptop's whole journey in two VMs (test/helpers/journey.ts): its own
// Debian booted by firmware and systemd-boot, stiefelsystem installed from
// the .deb with Debian's nodejs and set up by its setup-server-os; forged
// and replayed requests refused; the desktop from its boot stick; autokexec;
// the laptop OS on the desktop; the goodbye; the laptop back in its own OS
// with the token the desktop left. Then its boot-menu entry, and what
// uninstall and purge leave. `npm run e2e -- journey` runs it alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildDeb } from '../helpers/deb';
import { E2E_CACHE_DIR } from '../helpers/e2e';
import { bootMenuEntry, runJourney, type JourneyResult } from '../helpers/journey';
import { requireRoot, requireTool } from '../helpers/tools';

let journey: JourneyResult | undefined;
const started = Date.now();
const log = (line: string) => console.log(`[journey ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);

test('the journey: autokexec on a real request only, the laptop OS on the desktop, and the laptop back in its own OS with what the desktop wrote', { timeout: 60 * 60_000 }, async (t) => {
  requireRoot();
  for (const tool of ['qemu-system-x86_64', 'debootstrap', 'mke2fs', 'sgdisk', 'mkfs.vfat', 'mcopy', 'dpkg-deb']) requireTool(tool);
  const dir = mkdtempSync(join(tmpdir(), 'stf14-deb-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const deb = buildDeb(dir);
  journey = await runJourney({ cacheDir: E2E_CACHE_DIR, deb, timeScale: 3, log, consoleDir: '/tmp/stf14-journey-consoles' });
  assert.match(journey.token, /^[0-9a-f-]{36}$/);
  assert.deepEqual(
    journey.there.map((s) => s.name),
    ['desktop: firmware, stick, stiefelOS up', 'laptop: autokexec triggered', 'laptop: countdown', 'laptop: clean shutdown and kexec into stiefelOS', 'laptop: serving', 'desktop: discovery and payload', "desktop: kexec and the laptop OS's initramfs", 'desktop: the laptop OS boots and writes the token'],
  );
  for (const [name, stages] of [['laptop boot', journey.laptopBoot], ['there', journey.there], ['back', journey.back]] as const) {
    log(`${name}: ${stages.map((s) => `${s.name} ${s.seconds.toFixed(1)} s`).join('; ')}; total ${stages.reduce((a, s) => a + s.seconds, 0).toFixed(1)} s`);
  }
});

test("the laptop's boot-menu entry starts stiefelOS as the server", { timeout: 20 * 60_000 }, async () => {
  assert.ok(journey, 'the journey built the laptop image');
  const console = await bootMenuEntry({ image: journey.image, timeScale: 3, log });
  assert.match(console, /stiefelOS: .* role server/);
  assert.match(console, /the laptop's disk PTUUID=[0-9a-f-]+ is \/dev\/vda/);
});

test('setup-server-os --uninstall and apt purge leave the laptop as before the package', () => {
  assert.ok(journey, 'the journey built the laptop image');
  assert.deepEqual(journey.image.purgeDiff, { added: [], removed: [], espAdded: [], espRemoved: [] });
});
