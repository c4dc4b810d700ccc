// The desktop's boot stick for VM tests: `stiefelctl create-usbdrive` (the
// bundled CLI, as a user runs it) writes an image file from a stiefelOS image
// that build-image made, with a config of the test's own.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CLI } from './cli';

const run = promisify(execFile);

export interface BootStickOptions {
  /** stiefelOS's initrd.img (its directory holds vmlinuz too). */
  initrd: string;
  /** The secret that image carries. */
  secret: string;
  /** Where the stick image and its config go. */
  dir: string;
  /** client.cmdline_append. */
  cmdlineAppend?: string;
}

/** Writes DIR/stick.img; returns its path and how long create-usbdrive took. */
export async function makeBootStick(o: BootStickOptions): Promise<{ path: string; seconds: number }> {
  const config = join(o.dir, 'stick-config.yaml');
  writeFileSync(config, `secret: ${JSON.stringify(o.secret)}\nclient:\n  cmdline_append: ${JSON.stringify(o.cmdlineAppend ?? '')}\n`);
  const path = join(o.dir, 'stick.img');
  const started = Date.now();
  await run(process.execPath, [CLI, 'create-usbdrive', path, '--config', config, '--image', dirname(o.initrd), '--yes'], { maxBuffer: 16 * 1024 * 1024 });
  return { path, seconds: (Date.now() - started) / 1000 };
}
