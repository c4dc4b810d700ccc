// Builds what the VM layer's tests share and cache (stiefelOS, with and
// without its PXE copy; the laptop disk images of both initramfs families,
// debootstrap included; the journey's laptop, with the .deb installed and
// set up in it), so that `npm test` can make them in the background
// while the faster layers run: on a new machine that is most of ten minutes
// of debootstrap, dpkg and compression, which the VM tests would otherwise
// wait for one after another. scripts/test.mjs starts it and waits for it
// before the VM layer; whatever it could not build, the tests build (and
// report) themselves. Beside the rest, from the start, it also debootstraps
// the package layer's laptop (test/package/deb-install.test.ts), which
// would otherwise be the slowest step before the VM layer can begin, and
// the Debian system whose kernel and live-boot initramfs the live ISO test
// carries (test/helpers/live-iso.ts).
// Run by hand: node --import tsx test/helpers/prebuild.ts
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI } from './cli';
import { buildDeb } from './deb';
import { debianBase, PACKAGE_LAPTOP_BASE } from './debian-chroot';
import { TEST_CACHE_DIR } from './test-cache';
import { E2E_CACHE_DIR, e2eSecret, stiefelOsImage } from './e2e';
import { buildJourneyImage } from './journey-image';
import { buildLaptopImage } from './laptop-image';
import { LIVE_ISO_BASE } from './live-iso';

const started = Date.now();
const log = (line: string): void => console.log(`[prebuild ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);

async function main(): Promise<void> {
  const packageBase = debianBase({ ...PACKAGE_LAPTOP_BASE, cacheDir: TEST_CACHE_DIR, log }).then(
    () => log("the package layer's laptop base is ready"),
    (err: Error) => log(`the package layer's laptop base failed (its test builds it): ${err.message}`),
  );
  const liveBase = debianBase({ ...LIVE_ISO_BASE, cacheDir: TEST_CACHE_DIR, log }).then(
    () => log("the live ISO's Debian base is ready"),
    (err: Error) => log(`the live ISO's Debian base failed (its test builds it): ${err.message}`),
  );
  await stiefelOsImage(E2E_CACHE_DIR, log);
  await stiefelOsImage(E2E_CACHE_DIR, log, { pxe: true });
  for (const family of ['initramfs-tools', 'dracut'] as const) {
    await buildLaptopImage({ family, cacheDir: E2E_CACHE_DIR, stiefelctl: CLI, secret: e2eSecret(E2E_CACHE_DIR), log });
  }
  // The .deb is reproducible, so the journey test's own build names the same cache entry.
  const dir = mkdtempSync(join(tmpdir(), 'stf-prebuild-deb-'));
  try {
    await buildJourneyImage({ cacheDir: E2E_CACHE_DIR, deb: buildDeb(dir), secret: e2eSecret(E2E_CACHE_DIR), log });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await packageBase;
  await liveBase;
  log('done');
}

main().catch((err: unknown) => {
  console.error(`prebuild failed: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
