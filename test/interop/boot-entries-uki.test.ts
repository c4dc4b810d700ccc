// A real Unified Kernel Image, made with the systemd-boot stub and objcopy
// from the Debian kernel installed here: the kernel and initrd bytes we
// extract must equal the originals. The ESP is a directory (no vfat here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBootEntries } from '../../src/boot-entries/find';
import { encodeNewc } from '../../src/cpio/newc';
import { buildUki, SYSTEMD_STUB } from '../helpers/disk-image';
import { debianKernel } from '../helpers/kernel';

const KERNEL = debianKernel().path;
const UKI_RELEASE = '6.1.0-56-amd64'; // made-up release: the UKI's .uname, compared with nothing on the host
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('kernel, initrd, cmdline and os-release come out of a real UKI byte for byte', async () => {
  assert.ok(existsSync(SYSTEMD_STUB), `${SYSTEMD_STUB} is missing: run scripts/setup.sh (systemd-boot-efi)`);
  assert.ok(existsSync(KERNEL), `${KERNEL} is missing: run scripts/setup.sh (linux-image-amd64)`);
  const dir = mkdtempSync(join(tmpdir(), 'stf4-uki-'));
  try {
    const esp = join(dir, 'esp');
    mkdirSync(join(esp, 'EFI', 'Linux'), { recursive: true });
    const initrd = join(dir, 'initrd.cpio');
    writeFileSync(initrd, encodeNewc([{ type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 }, { type: 'file', path: 'big', data: Buffer.alloc(300_000, 7) }]));
    buildUki(join(esp, 'EFI', 'Linux', `debian-${UKI_RELEASE}.efi`), {
      kernel: KERNEL,
      initrd,
      cmdline: 'root=UUID=2f3a1c9e-5b7d-4e21-9a60-3c1b8d2e7f45 ro quiet\n',
      osRelease: 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n',
      uname: UKI_RELEASE,
    });
    // A second image whose PE header is broken: skipped with the reason, never a crash.
    const broken = readFileSync(join(esp, 'EFI', 'Linux', `debian-${UKI_RELEASE}.efi`));
    broken.writeUInt32LE(0x7fffffff, 0x3c);
    writeFileSync(join(esp, 'EFI', 'Linux', 'broken.efi'), broken.subarray(0, 4096));
    copyFileSync(KERNEL, join(esp, 'EFI', 'Linux', 'plain-kernel.efi'));

    const scan = await findBootEntries(esp);
    try {
      const uki = scan.entries.find((e) => e.source === 'uki')!;
      assert.ok(uki, JSON.stringify(scan.skipped));
      assert.equal(uki.default, true);
      assert.equal(uki.title, 'Debian GNU/Linux 12 (bookworm)');
      assert.equal(uki.version, UKI_RELEASE);
      assert.equal(uki.cmdline, 'root=UUID=2f3a1c9e-5b7d-4e21-9a60-3c1b8d2e7f45 ro quiet');
      assert.equal(uki.kernel, `/EFI/Linux/debian-${UKI_RELEASE}.efi:.linux`);
      assert.equal(sha(await scan.read(uki.files.kernel)), sha(readFileSync(KERNEL)));
      assert.equal(sha(await scan.read(uki.files.initrds[0]!)), sha(readFileSync(initrd)));
      // The stream gives the same bytes as the read.
      const chunks: Buffer[] = [];
      for await (const c of scan.open(uki.files.kernel)) chunks.push(c as Buffer);
      assert.equal(sha(Buffer.concat(chunks)), sha(readFileSync(KERNEL)));
      const reasons = Object.fromEntries(scan.skipped.map((s) => [s.what, s.reason]));
      assert.match(reasons['/EFI/Linux/broken.efi']!, /broken PE header/);
      assert.match(reasons['/EFI/Linux/plain-kernel.efi']!, /no \.linux section/);
    } finally {
      await scan.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
