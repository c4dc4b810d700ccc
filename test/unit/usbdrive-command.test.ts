// `stiefelctl create-usbdrive` and the mistakes people make with it, through
// the CLI's main(): each is one line on stderr naming the fix, with the exit
// code of its kind (2 for the command line, 1 for the rest), and nothing is
// written. (Disks, root and real images: test/disk/usbdrive-disk.test.ts.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main, type MainIO } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands';

const dir = mkdtempSync(join(tmpdir(), 'stf13-cmd-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: MainIO = { argv: ['create-usbdrive', ...argv], env: {}, cwd: dir, stdout: (t) => out.push(t), stderr: (t) => err.push(t), stderrIsTTY: false, signal: new AbortController().signal };
  const code = await main(io, COMMANDS);
  return { code, out: out.join(''), err: err.join('') };
}

function oneLine(err: string, re: RegExp): void {
  assert.equal(err.split('\n').filter(Boolean).length, 1, `one line, got: ${err}`);
  assert.match(err, re);
}

test('--help shows the usage, the layout and examples', async () => {
  const r = await cli('--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /^Usage: stiefelctl create-usbdrive TARGET \[--config PATH\] \[--image DIR\] \[--size SIZE\]/);
  assert.match(r.out, /EFI\/BOOT\/BOOTX64\.EFI/);
  assert.match(r.out, /key to the laptop's disk/);
});

test('command-line mistakes: exit 2, one line', async () => {
  const cases: [string[], RegExp][] = [
    [[], /^stiefelctl create-usbdrive: missing TARGET \(a whole disk such as \/dev\/sdb, or an image file name\) \(see 'stiefelctl create-usbdrive --help'\)\n$/],
    [['a.img', 'b.img'], /unexpected argument 'b\.img'/],
    [['a.img', '--size', 'big', '--image', dir], /--size must be a size such as 256M or 2G, not 'big'/],
    [['a.img', '--image', dir, '--kernel', '/boot/vmlinuz'], /--kernel builds stiefelOS, --image uses a built one: give one of them/],
    // From source (not the bundle), stiefelOS cannot be built: it carries the bundle.
    [['a.img'], /not running from the bundled stiefelctl\.js, which stiefelOS carries: run dist\/stiefelctl\.js \(npm run build\), or pass --image DIR/],
    [[dir, '--image', dir], /is a directory: give an image file name inside it/],
    [[join(dir, 'no', 'such', 'x.img'), '--image', dir], /the directory .* for the image file .* does not exist: create it first/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    oneLine(r.err, re);
  }
});

test('a missing config, a missing image: exit 1, one line naming the fix, no file made', async () => {
  const config = join(dir, 'config.yaml');
  let r = await cli('stick.img', '--config', config, '--image', join(dir, 'image'));
  assert.equal(r.code, 1);
  oneLine(r.err, new RegExp(`config ${config} does not exist: run 'stiefelctl init --config ${config}' to write one`));
  writeFileSync(config, 'secret: secret\n');
  writeFileSync(join(dir, 'secret'), Buffer.alloc(32, 3), { mode: 0o600 });
  r = await cli('stick.img', '--config', config, '--image', join(dir, 'image'));
  assert.equal(r.code, 1);
  oneLine(r.err, /no stiefelOS image in .*image \(vmlinuz is missing\): run 'stiefelctl build-image --out .*', or leave out --image to build it now/);
  chmodSync(join(dir, 'secret'), 0o644);
  r = await cli('stick.img', '--config', config, '--image', join(dir, 'image'));
  oneLine(r.err, /the secret file .*secret is readable by others \(mode 0644\): run 'chmod 600 /);
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('stick')), []);
});
