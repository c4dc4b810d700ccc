// stiefelOS for the stick: the config that goes in points at the image's
// secret; an image given with --image must be stiefelOS and carry the same
// secret as the config (checked by streaming its initrd, gzip or plain cpio
// here; zstd in the disk layer), else the refusal names the fix.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { parseConfigText } from '../../src/config';
import { encodeNewc, type CpioEntry } from '../../src/cpio/newc';
import { checkStiefelOsImage, initrdCompression, readInitrdFacts, stickConfigText } from '../../src/usbdrive/stiefelos';

const dir = mkdtempSync(join(tmpdir(), 'stf13-os-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const SECRET = Buffer.alloc(32, 0x5e);
const RELEASE = '6.1.0-99-amd64'; // made-up release

/** The first bytes of a bzImage: boot flag, "HdrS", protocol 2.15, a version string. */
function fakeBzImage(): Buffer {
  const b = Buffer.alloc(0x1000);
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206);
  b.writeUInt16LE(0x800 - 0x200, 0x20e);
  b.write(`${RELEASE} (test@example) #1 SMP\0`, 0x800, 'latin1');
  return b;
}

function imageDir(name: string, files: CpioEntry[], compress: (b: Buffer) => Buffer = gzipSync): string {
  const d = join(dir, name);
  mkdirSync(d);
  writeFileSync(join(d, 'vmlinuz'), fakeBzImage());
  // Filler first: the looked-for files are found wherever they sort.
  writeFileSync(join(d, 'initrd.img'), compress(encodeNewc([{ type: 'file', path: 'usr/lib/big', data: Buffer.alloc(3 << 20, 1) }, ...files])));
  return d;
}

const base: CpioEntry[] = [
  { type: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
  { type: 'file', path: 'etc/stiefelos/release', data: Buffer.from('stiefelOS (stiefelctl 0.1.0)\n') },
  { type: 'file', path: 'etc/stiefelsystem/config.yaml', data: Buffer.from('secret: secret\n') },
  { type: 'file', path: 'etc/stiefelsystem/secret', data: SECRET, mode: 0o600 },
];

test("the stick's config: the user's file with `secret` at the image's copy, comments and other keys kept", () => {
  const text = '# my laptop\nsecret: /root/keys/stiefel # the key\nclient:\n  cmdline_append: "quiet"\n';
  const out = stickConfigText(text, '/etc/stiefelsystem/config.yaml');
  assert.equal(out, '# my laptop\nsecret: secret # the key\nclient:\n  cmdline_append: "quiet"\n');
  assert.equal(parseConfigText(out, '/etc/stiefelsystem/config.yaml').secret, '/etc/stiefelsystem/secret');
  assert.equal(stickConfigText('', '/x'), 'secret: secret\n');
  assert.throws(() => stickConfigText('secret: [', '/etc/x.yaml'), /config \/etc\/x\.yaml line 1 column \d+: invalid YAML/);
  assert.throws(() => stickConfigText('client:\n  cmdline_append: "a\\"b"\n', '/etc/x.yaml'), /client\.cmdline_append must be kernel command line words/);
});

test('initrd compression from the magic bytes', () => {
  assert.equal(initrdCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd');
  assert.equal(initrdCompression(Buffer.from([0x1f, 0x8b, 8, 0])), 'gzip');
  assert.equal(initrdCompression(Buffer.from('070701')), 'none');
  assert.equal(initrdCompression(Buffer.from('MZ\x90\0')), 'unknown');
});

test('an image with the same secret passes, gzip or plain; the facts come from streaming its initrd', async () => {
  for (const [name, c] of [['gz', gzipSync], ['plain', (b: Buffer) => b]] as const) {
    const d = imageDir(`ok-${name}`, base, c);
    const os = await checkStiefelOsImage(d, SECRET);
    assert.equal(os.release, RELEASE);
    assert.equal(os.vmlinuz, join(d, 'vmlinuz'));
    const facts = await readInitrdFacts(join(d, 'initrd.img'));
    assert.ok(facts.files.get('etc/stiefelsystem/secret')?.equals(SECRET));
  }
});

test('images that would make a useless stick are refused, each naming the fix', async () => {
  const fix = /run 'stiefelctl build-image --out .* --config CONFIG --secret SECRET', or leave out --image to build it now$/;
  const refused = async (d: string, message: RegExp): Promise<void> => {
    await assert.rejects(checkStiefelOsImage(d, SECRET), (err: Error) => {
      assert.match(err.message, message);
      assert.match(err.message, fix);
      return true;
    });
  };
  await refused(join(dir, 'missing'), /^no stiefelOS image in .*missing \(vmlinuz is missing\): /);
  await refused(imageDir('other-secret', base.map((e) => (e.path.endsWith('secret') ? { ...e, data: Buffer.alloc(32, 1) } : e))), /carries another secret than the config's: the laptop would not answer this stick/);
  await refused(imageDir('no-secret', base.filter((e) => !e.path.endsWith('secret'))), /carries no secret, so the desktop could not prove itself to the laptop/);
  await refused(imageDir('no-config', base.filter((e) => !e.path.endsWith('config.yaml'))), /carries no config, so its client cannot start/);
  await refused(
    imageDir('elsewhere', base.map((e) => (e.path.endsWith('config.yaml') ? { ...e, data: Buffer.from('secret: /root/s\n') } : e))),
    /names the secret \/root\/s, but the image has it at \/etc\/stiefelsystem\/secret/,
  );
  await refused(imageDir('not-stiefelos', base.filter((e) => e.path !== 'init')), /is not stiefelOS \(no \/init/);
  const notKernel = imageDir('not-kernel', base);
  writeFileSync(join(notKernel, 'vmlinuz'), 'hello');
  await assert.rejects(checkStiefelOsImage(notKernel, SECRET), /vmlinuz is not a Linux kernel image: no x86 boot header/);
  const junk = imageDir('junk', base);
  writeFileSync(join(junk, 'initrd.img'), 'MZ not an initrd');
  await assert.rejects(checkStiefelOsImage(junk, SECRET), /initrd\.img is not a stiefelOS initrd \(neither zstd, gzip nor cpio\)/);
});
