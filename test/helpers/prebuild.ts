// Builds what the VM layer's tests share and cache (stiefelOS, with and
// without its PXE copy; the laptop disk images of both initramfs families,
// debootstrap included), so that `npm test` can make them in the background
// while the faster layers run: on a new machine that is most of ten minutes
// of debootstrap, dpkg and compression, which the VM tests would otherwise
// wait for one after another. scripts/test.mjs starts it and waits for it
// before the VM layer; whatever it could not build, the tests build (and
// report) themselves. Run by hand: node --import tsx test/helpers/prebuild.ts
import { CLI } from './cli';
import { E2E_CACHE_DIR, e2eSecret, stiefelOsImage } from './e2e';
import { buildLaptopImage } from './laptop-image';

const started = Date.now();
const log = (line: string): void => console.log(`[prebuild ${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`);

async function main(): Promise<void> {
  await stiefelOsImage(E2E_CACHE_DIR, log);
  await stiefelOsImage(E2E_CACHE_DIR, log, { pxe: true });
  for (const family of ['initramfs-tools', 'dracut'] as const) {
    await buildLaptopImage({ family, cacheDir: E2E_CACHE_DIR, stiefelctl: CLI, secret: e2eSecret(E2E_CACHE_DIR), log });
  }
  log('done');
}

main().catch((err: unknown) => {
  console.error(`prebuild failed: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(1);
});
