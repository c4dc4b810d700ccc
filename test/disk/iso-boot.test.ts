// `stiefelctl iso boot FILE --no-kexec --out DIR` on the host, with an ISO
// assembled from Debian's netboot installer (test/helpers/mini-iso.ts): what
// would be kexec'd is written out; a wrong checksum, a missing entry, plain
// HTTP without a checksum and a live ISO are refused with nothing written.
// The kexec itself and the download in stiefelOS: test/vm/iso-boot.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { debianInstallerDir, makeMiniIso } from '../helpers/mini-iso';
import { requireTool } from '../helpers/tools';

let dir: string;
let iso: string;
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

before(() => {
  requireTool('xorriso');
  dir = mkdtempSync(join(tmpdir(), 'stf-iso-boot-'));
  iso = makeMiniIso(dir);
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("the installer's kernel, initrd and command line come out of the ISO as they would be kexec'd", async () => {
  const out = join(dir, 'out');
  const r = await runCli(['iso', 'boot', iso, '--sha256', sha(iso), '--no-kexec', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /booting entry 1 of mini\.iso: Install \(Debian installer\)/);
  assert.equal(sha(join(out, 'vmlinuz')), sha(join(debianInstallerDir(), 'linux')));
  assert.equal(sha(join(out, 'initrd.img')), sha(join(debianInstallerDir(), 'initrd.gz')));
  // The menu's words (its initrd= dropped: kexec loads the initrd), then this machine's consoles.
  const consoles = readFileSync('/proc/cmdline', 'utf8').split(/\s+/).filter((w) => w.startsWith('console='));
  assert.equal(readFileSync(join(out, 'cmdline'), 'utf8'), `${['vga=788', '---', 'quiet', ...consoles].join(' ')}\n`);
});

test('refusals: a wrong checksum, no such entry, http without a checksum, a live ISO; nothing written', async () => {
  const out = join(dir, 'refused');
  const wrong = 'f'.repeat(64);
  const bad = await runCli(['iso', 'boot', iso, '--sha256', wrong, '--no-kexec', '--out', out]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, new RegExp(`has SHA-256 ${sha(iso)}, not the ${wrong} you gave: nothing is booted`));
  const entry = await runCli(['iso', 'boot', iso, '--entry', '2', '--no-kexec', '--out', out]);
  assert.equal(entry.code, 1);
  assert.match(entry.stderr, /has no entry 2 \(it has 1 to 1; 'stiefelctl iso inspect/);
  const http = await runCli(['iso', 'boot', 'http://127.0.0.1:9/x.iso', '--no-kexec', '--out', out]);
  assert.equal(http.code, 1);
  assert.match(http.stderr, /an ISO over plain HTTP needs --sha256 HEX/);
  assert.ok(!existsSync(out), 'nothing written');

  const live = join(dir, 'live-tree');
  mkdirSync(join(live, 'live'), { recursive: true });
  mkdirSync(join(live, 'isolinux'), { recursive: true });
  writeFileSync(join(live, 'live', 'vmlinuz'), 'kernel (made up for the test)');
  writeFileSync(join(live, 'live', 'initrd.img'), 'initrd (made up)');
  writeFileSync(join(live, 'isolinux', 'isolinux.cfg'), 'default live\nlabel live\n  kernel /live/vmlinuz\n  append initrd=/live/initrd.img boot=live components\n');
  const liveIso = join(dir, 'live.iso');
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', liveIso, '-J', '-R', live], { stdio: 'ignore' });
  const l = await runCli(['iso', 'boot', liveIso, '--no-kexec', '--out', out]);
  assert.equal(l.code, 1);
  assert.match(l.stderr, /is Debian live: its initramfs \(live-boot\) looks for the ISO again once the kernel runs/);
  assert.ok(!existsSync(out));
});
