import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kexecLoadArgs, kexecTools } from '../../src/kexec/kexec';
import { silentLogger } from '../../src/log';

const image = { kernel: '/run/p/vmlinuz', initrd: '/run/p/initrd.img', cmdline: 'root=UUID=1 ro quiet stiefel.mac=aa:bb:cc:dd:ee:ff "x=a b"' };

test('kexec -l gets the kernel, --initrd= and the whole command line as one argument', () => {
  assert.deepEqual(kexecLoadArgs(image), ['-l', '/run/p/vmlinuz', '--initrd=/run/p/initrd.img', `--command-line=${image.cmdline}`]);
});

// kexec itself would replace the running kernel; a recording stand-in runs
// instead, to check the exact argv our code passes (no shell in between).
function fakeKexec(dir: string, failOn?: string): string {
  const bin = join(dir, 'kexec');
  writeFileSync(
    bin,
    `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >> ${dir}/calls\necho --- >> ${dir}/calls\n` +
      (failOn ? `[ "$1" = "${failOn}" ] && { echo "kexec_load failed: Operation not permitted" >&2; exit 1; }\n` : '') +
      'exit 0\n',
  );
  chmodSync(bin, 0o755);
  return bin;
}

test('the real runner calls the binary with exactly those arguments, then -e', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-kexec-'));
  try {
    const k = kexecTools({ binary: fakeKexec(dir) });
    await k.load(image, { log: silentLogger });
    await assert.rejects(k.exec({ log: silentLogger }), /kexec -e returned/);
    assert.equal(readFileSync(join(dir, 'calls'), 'utf8'), `${kexecLoadArgs(image).join('\n')}\n---\n-e\n---\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failing or missing kexec is one line naming the cause', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-kexec-'));
  try {
    const k = kexecTools({ binary: fakeKexec(dir, '-l') });
    await assert.rejects(k.load(image, { log: silentLogger }), (e: Error) => e.message === `${dir}/kexec -l failed: kexec_load failed: Operation not permitted`);
    await assert.rejects(kexecTools({ binary: join(dir, 'none') }).load(image, { log: silentLogger }), /is not installed \(kexec-tools\); or use --no-kexec --out DIR/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
