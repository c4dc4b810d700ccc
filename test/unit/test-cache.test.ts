import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pruneCache } from '../helpers/test-cache';

test('the VM test cache keeps only the entry that current inputs name, per kind', () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf10-cache-'));
  try {
    for (const d of ['laptop-base-dracut-aaaa', 'laptop-base-dracut-bbbb', 'laptop-base-dracut-bbbb.tmp-1234', 'laptop-base-initramfs-tools-cccc', 'stiefelos-1111', 'stiefelos-2222']) {
      mkdirSync(join(dir, d));
      writeFileSync(join(dir, d, 'f'), 'x');
    }
    writeFileSync(join(dir, 'e2e-secret'), 'k');
    assert.deepEqual(pruneCache(dir, 'laptop-base-dracut-', 'laptop-base-dracut-aaaa').sort(), ['laptop-base-dracut-bbbb', 'laptop-base-dracut-bbbb.tmp-1234']);
    assert.deepEqual(pruneCache(dir, 'stiefelos-', 'stiefelos-2222'), ['stiefelos-1111']);
    assert.deepEqual(readdirSync(dir).sort(), ['e2e-secret', 'laptop-base-dracut-aaaa', 'laptop-base-initramfs-tools-cccc', 'stiefelos-2222']);
    assert.deepEqual(pruneCache(join(dir, 'absent'), 'x', 'y'), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
