// build-image --pxe: the laptop's initrd is the public one (what PXE serves)
// followed by a cpio with the config, the secret and the served copy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeNewc, initrdPadding } from '../../src/cpio/newc';
import { PXE_IMAGE_DIR, writeImageWithPxeCopy } from '../../src/image/pxe-copy';

test('the laptop image is the public initrd, then one cpio with the served copy, the config and the secret (mode 0600)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf-pxe-copy-'));
  try {
    const pub = join(dir, 'pxe');
    const kernel = randomBytes(4099);
    const initrd = randomBytes(10_001);
    const secret = randomBytes(32);
    mkdirSync(pub);
    writeFileSync(join(pub, 'vmlinuz'), kernel);
    writeFileSync(join(pub, 'initrd.img'), initrd);
    writeFileSync(join(dir, 'config.yaml'), 'secret: secret\n');
    writeFileSync(join(dir, 'secret'), secret, { mode: 0o600 });
    const r = await writeImageWithPxeCopy({ publicDir: pub, outDir: dir, config: join(dir, 'config.yaml'), secret: join(dir, 'secret') });

    assert.deepEqual(readFileSync(join(dir, 'vmlinuz')), kernel);
    const whole = readFileSync(join(dir, 'initrd.img'));
    assert.equal(whole.length, r.initrdBytes);
    assert.equal(statSync(join(dir, 'initrd.img')).mode & 0o777, 0o600);
    assert.deepEqual(whole.subarray(0, initrd.length), initrd, 'the public initrd comes first, unchanged');
    const pad = initrdPadding(initrd.length).length;
    const { entries } = decodeNewc(whole, initrd.length + pad);
    const files = new Map(entries.filter((e) => e.data.length > 0 || e.path.endsWith('.yaml')).map((e) => [e.path, e]));
    assert.deepEqual(files.get(`${PXE_IMAGE_DIR.slice(1)}/vmlinuz`)?.data, kernel);
    assert.deepEqual(files.get(`${PXE_IMAGE_DIR.slice(1)}/initrd.img`)?.data, initrd);
    assert.deepEqual(files.get('etc/stiefelsystem/secret')?.data, secret);
    assert.equal(files.get('etc/stiefelsystem/secret')!.mode & 0o777, 0o600);
    assert.equal(files.get('etc/stiefelsystem/config.yaml')?.data.toString(), 'secret: secret\n');
    // The served copy stays as it was, and no temporary file is left.
    assert.deepEqual(readFileSync(join(pub, 'initrd.img')), initrd);
    assert.deepEqual(readdirSync(dir).sort(), ['config.yaml', 'initrd.img', 'pxe', 'secret', 'vmlinuz']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
