import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectHandOff, fileLoadMayFallBack, kexecLoadArgs, kexecTools } from '../../src/kexec/kexec';
import { silentLogger } from '../../src/log';

const image = { kernel: '/run/p/vmlinuz', initrd: '/run/p/initrd.img', cmdline: 'root=UUID=1 ro quiet stiefel.mac=aa:bb:cc:dd:ee:ff "x=a b"' };

test('kexec -s -l (file-based) gets the kernel, --initrd= and the whole command line as one argument', () => {
  assert.deepEqual(kexecLoadArgs(image), ['-s', '-l', '/run/p/vmlinuz', '--initrd=/run/p/initrd.img', `--command-line=${image.cmdline}`]);
  assert.deepEqual(kexecLoadArgs(image, 'legacy'), ['-l', '/run/p/vmlinuz', '--initrd=/run/p/initrd.img', `--command-line=${image.cmdline}`]);
});

test('the legacy load is tried only where the file-based one is missing, never past a refused signature', () => {
  assert.equal(fileLoadMayFallBack('kexec_file_load failed: Function not implemented'), true);
  assert.equal(fileLoadMayFallBack('kexec: unrecognized option \'-s\''), true);
  assert.equal(fileLoadMayFallBack('kexec_file_load failed: Key was rejected by service'), false);
  assert.equal(fileLoadMayFallBack('kexec_file_load failed: Bad message'), false);
  assert.equal(fileLoadMayFallBack('kexec_file_load failed: Operation not permitted'), false);
  assert.equal(fileLoadMayFallBack('Cannot open /x: No such file or directory'), false);
});

// kexec itself would replace the running kernel; a recording stand-in runs
// instead, to check the exact argv our code passes (no shell in between).
function fakeKexec(dir: string, failOn?: string, message = 'kexec_load failed: Operation not permitted', name = 'kexec'): string {
  const bin = join(dir, name);
  writeFileSync(
    bin,
    `#!/bin/sh\nfor a in "$@"; do printf '%s\\n' "$a"; done >> ${dir}/calls\necho --- >> ${dir}/calls\n` +
      (failOn ? `[ "$1" = "${failOn}" ] && { echo "${message}" >&2; exit 1; }\n` : '') +
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

test('a kernel without kexec_file_load is loaded with kexec_load; a clean hand-off goes through systemctl kexec', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-kexec-'));
  try {
    const k = kexecTools({ binary: fakeKexec(dir, '-s', 'kexec_file_load failed: Function not implemented'), systemctl: fakeKexec(dir, undefined, '', 'systemctl'), handOff: 'systemctl' });
    await k.load(image, { log: silentLogger });
    await k.exec({ log: silentLogger });
    assert.equal(readFileSync(join(dir, 'calls'), 'utf8'), `${kexecLoadArgs(image).join('\n')}\n---\n${kexecLoadArgs(image, 'legacy').join('\n')}\n---\nkexec\n---\n`);
    assert.equal(await detectHandOff(async (p) => p === '/run/systemd/system'), 'systemctl');
    assert.equal(await detectHandOff(async () => false), 'direct');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failing or missing kexec is one line naming the cause', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf3-kexec-'));
  try {
    // A refused signature is not worked around with the legacy call.
    const k = kexecTools({ binary: fakeKexec(dir, '-s', 'kexec_file_load failed: Key was rejected by service') });
    await assert.rejects(k.load(image, { log: silentLogger }), (e: Error) => e.message === `${dir}/kexec -s -l failed: kexec_file_load failed: Key was rejected by service`);
    assert.equal(readFileSync(join(dir, 'calls'), 'utf8').split('---').length - 1, 1, 'kexec ran once');
    await assert.rejects(kexecTools({ binary: join(dir, 'none'), missingFix: '; or use --no-kexec --out DIR' }).load(image, { log: silentLogger }), /is not installed \(kexec-tools\); or use --no-kexec --out DIR/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
