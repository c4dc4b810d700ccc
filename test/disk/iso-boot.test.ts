// `stiefelctl iso boot FILE --no-kexec --out DIR` on the host, with an ISO
// assembled from Debian's netboot installer (test/helpers/mini-iso.ts): what
// would be kexec'd is written out; a wrong checksum, a missing entry, plain
// HTTP without a checksum and a live ISO in RAM are refused with nothing
// written, a live ISO on a disk gets its path there (findiso=); a
// distribution's signed SHA256SUMS is checked with gpgv before the ISO is fetched.
// The kexec itself and the download in stiefelOS: test/vm/iso-boot.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, createReadStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
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
  // In RAM (a tmpfs, as a download in stiefelOS is): its initramfs could not find it again.
  const ram = join(dir, 'ram');
  mkdirSync(ram);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', ram]);
  try {
    copyFileSync(liveIso, join(ram, 'live.iso'));
    const l = await runCli(['iso', 'boot', join(ram, 'live.iso'), '--no-kexec', '--out', out]);
    assert.equal(l.code, 1);
    assert.match(l.stderr, /is Debian live: its initramfs \(live-boot\) looks for the ISO file again once the kernel runs, and .*live\.iso is in RAM \(tmpfs\), where the ISO's kernel cannot see it; copy the ISO to a USB disk/);
    assert.ok(!existsSync(out));
  } finally {
    execFileSync('umount', [ram]);
  }
});

test('a live ISO on a disk (ext4 on a loop device) boots with its path there for live-boot (findiso=)', async () => {
  requireTool('mkfs.ext4');
  const live = join(dir, 'live.iso');
  const disk = join(dir, 'usb-disk.img');
  const tree = join(dir, 'usb-tree');
  mkdirSync(join(tree, 'isos'), { recursive: true });
  copyFileSync(live, join(tree, 'isos', 'debian-live.iso'));
  execFileSync('truncate', ['-s', '32M', disk]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, '-U', '2b8f3c4e-6a7d-4c1b-9e2f-0123456789ab', disk]);
  const mnt = join(dir, 'usb-mnt');
  mkdirSync(mnt);
  execFileSync('mount', ['-o', 'loop,ro', disk, mnt]);
  const out = join(dir, 'live-out');
  try {
    const r = await runCli(['iso', 'boot', join(mnt, 'isos', 'debian-live.iso'), '--no-kexec', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const cmdline = readFileSync(join(out, 'cmdline'), 'utf8').trim();
    assert.match(cmdline, /^boot=live components( console=\S+)* findiso=\/isos\/debian-live\.iso$/);
    assert.match(r.stderr, /its initramfs \(live-boot\) finds the ISO again as \/isos\/debian-live\.iso on \/dev\/loop\d+: findiso=\/isos\/debian-live\.iso/);
    assert.equal(readFileSync(join(out, 'vmlinuz'), 'utf8'), 'kernel (made up for the test)');
  } finally {
    execFileSync('umount', [mnt]);
  }
});

/** A signing key of the test's own (gpg, in a home of its own), and its public key exported as a keyring. */
function signingKey(name: string): { home: string; keyring: string; fingerprint: string } {
  const home = mkdtempSync(join(dir, `gnupg-${name}-`));
  const gpg = (...args: string[]) => execFileSync('gpg', ['--homedir', home, '--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { encoding: 'utf8' });
  gpg('--quick-gen-key', `stiefel test ${name} <${name}@stiefel.invalid>`, 'ed25519', 'sign', '1d');
  const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(gpg('--with-colons', '--list-keys'))![1]!;
  const keyring = join(dir, `${name}.gpg`);
  writeFileSync(keyring, execFileSync('gpg', ['--homedir', home, '--batch', '--export', fingerprint]));
  return { home, keyring, fingerprint };
}

function detachSign(home: string, file: string, out: string): void {
  execFileSync('gpg', ['--homedir', home, '--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', '--yes', '--detach-sign', '-o', out, file]);
}

test('a signed SHA256SUMS (gpgv against the keyring) gives the checksum: a good signature boots, detached or clear-signed (Fedora); a changed list, another key, no signature, no listing, a line outside the signature, no keyring are refused before the ISO is fetched', async (t) => {
  requireTool('gpg');
  requireTool('gpgv');
  const key = signingKey('cd');
  const other = signingKey('other');
  const web = join(dir, 'web');
  for (const d of ['good', 'ubuntu', 'changed', 'unsigned', 'unlisted', 'other']) mkdirSync(join(web, d), { recursive: true });
  const listing = `${sha(iso)}  mini.iso\n${'0'.repeat(64)}  other.iso\n`;
  for (const d of ['good', 'ubuntu', 'changed', 'unsigned', 'other']) writeFileSync(join(web, d, 'SHA256SUMS'), listing);
  writeFileSync(join(web, 'unlisted', 'SHA256SUMS'), `${'1'.repeat(64)}  netinst.iso\n`);
  detachSign(key.home, join(web, 'good', 'SHA256SUMS'), join(web, 'good', 'SHA256SUMS.sign'));
  detachSign(key.home, join(web, 'ubuntu', 'SHA256SUMS'), join(web, 'ubuntu', 'SHA256SUMS.gpg'));
  detachSign(key.home, join(web, 'unlisted', 'SHA256SUMS'), join(web, 'unlisted', 'SHA256SUMS.sign'));
  detachSign(other.home, join(web, 'other', 'SHA256SUMS'), join(web, 'other', 'SHA256SUMS.sign'));
  // Signed, then changed: the list says another SHA-256 for mini.iso.
  detachSign(key.home, join(web, 'changed', 'SHA256SUMS'), join(web, 'changed', 'SHA256SUMS.sign'));
  writeFileSync(join(web, 'changed', 'SHA256SUMS'), listing.replace(sha(iso), 'e'.repeat(64)));
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(req.url ?? '');
    const [, d, name] = /^\/([a-z-]+)\/([A-Za-z0-9._]+)$/.exec(req.url ?? '') ?? [];
    const file = name === 'mini.iso' ? iso : d && name ? join(web, d, name) : '';
    if (!file || !existsSync(file)) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const boot = (d: string, keyring = key.keyring, out = join(dir, `sums-${d}`), list = 'SHA256SUMS') =>
    runCli(['iso', 'boot', `${base}/${d}/mini.iso`, '--sums', `${base}/${d}/${list}`, '--keyring', keyring, '--no-kexec', '--out', out]);

  const good = await boot('good');
  assert.equal(good.code, 0, good.stderr);
  assert.match(good.stderr, new RegExp(`SHA256SUMS is signed by ${key.fingerprint} \\(cd\\.gpg\\); it gives mini\\.iso the SHA-256 ${sha(iso)}`));
  assert.equal(sha(join(dir, 'sums-good', 'vmlinuz')), sha(join(debianInstallerDir(), 'linux')));
  // Ubuntu's name for the signature.
  const ubuntu = await boot('ubuntu');
  assert.equal(ubuntu.code, 0, ubuntu.stderr);

  const refusals: Array<[string, string | undefined, RegExp]> = [
    ['changed', undefined, /the signature of the checksum list does not verify: the signature is bad \(the list was changed after it was signed\); nothing is booted$/],
    ['other', undefined, new RegExp(`the signature of the checksum list does not verify: it was not made by a key in ${key.keyring.replace(/[.]/g, '\\.')}; nothing is booted$`)],
    ['unsigned', undefined, /no signature next to \S+\/unsigned\/SHA256SUMS \(tried SHA256SUMS\.sign, SHA256SUMS\.gpg, SHA256SUMS\.asc; nor is it clear-signed\): a checksum list without its signature proves nothing$/],
    ['unlisted', undefined, /SHA256SUMS does not list mini\.iso \(it lists netinst\.iso\): give the checksum list of this ISO's directory$/],
    ['good', join(dir, 'no-such.gpg'), /a signed checksum list is checked against a keyring, and there is no \S+no-such\.gpg: give --keyring FILE/],
  ];
  for (const [d, keyring, why] of refusals) {
    requests.length = 0;
    const out = join(dir, `refused-${d}`);
    const r = await boot(d, keyring, out);
    assert.equal(r.code, 1, `${d}: ${r.stderr}`);
    assert.match(r.stderr.trim().split('\n').at(-1)!, why, d);
    assert.ok(!existsSync(out), `${d}: nothing written`);
    assert.ok(!requests.some((u) => u.endsWith('/mini.iso')), `${d}: the ISO was not fetched`);
  }

  // Fedora's way: one clear-signed CHECKSUM file with BSD lines; only the signed text counts.
  for (const d of ['fedora', 'fedora-changed', 'fedora-outside']) mkdirSync(join(web, d), { recursive: true });
  const clearSign = (d: string, text: string): void => {
    writeFileSync(join(web, d, 'plain'), text);
    execFileSync('gpg', ['--homedir', key.home, '--batch', '--quiet', '--pinentry-mode', 'loopback', '--passphrase', '', '--yes', '--clearsign', '-o', join(web, d, 'CHECKSUM'), join(web, d, 'plain')]);
  };
  clearSign('fedora', `# mini.iso: ${statSync(iso).size} bytes\nSHA256 (mini.iso) = ${sha(iso)}\n`);
  clearSign('fedora-changed', `SHA256 (mini.iso) = ${sha(iso)}\n`);
  writeFileSync(join(web, 'fedora-changed', 'CHECKSUM'), readFileSync(join(web, 'fedora-changed', 'CHECKSUM'), 'utf8').replace(sha(iso), 'e'.repeat(64)));
  // A line after the signature, outside what it covers, naming the ISO: not read.
  clearSign('fedora-outside', `SHA256 (other.iso) = ${'0'.repeat(64)}\n`);
  writeFileSync(join(web, 'fedora-outside', 'CHECKSUM'), `${readFileSync(join(web, 'fedora-outside', 'CHECKSUM'), 'utf8')}SHA256 (mini.iso) = ${sha(iso)}\n`);
  const fedora = await boot('fedora', key.keyring, join(dir, 'sums-fedora'), 'CHECKSUM');
  assert.equal(fedora.code, 0, fedora.stderr);
  assert.match(fedora.stderr, new RegExp(`CHECKSUM is signed by ${key.fingerprint} \\(cd\\.gpg\\); it gives mini\\.iso the SHA-256 ${sha(iso)}`));
  assert.ok(!requests.some((u) => /CHECKSUM\.(sign|gpg|asc)$/.test(u)), 'no detached signature looked for');
  for (const [d, why] of [
    ['fedora-changed', /the signature of the checksum list does not verify: the signature is bad \(the list was changed after it was signed\); nothing is booted$/],
    ['fedora-outside', /CHECKSUM does not list mini\.iso \(it lists other\.iso\)/],
  ] as const) {
    requests.length = 0;
    const out = join(dir, `refused-${d}`);
    const r = await boot(d, key.keyring, out, 'CHECKSUM');
    assert.equal(r.code, 1, `${d}: ${r.stderr}`);
    assert.match(r.stderr.trim().split('\n').at(-1)!, why, d);
    assert.ok(!existsSync(out) && !requests.some((u) => u.endsWith('/mini.iso')), `${d}: nothing fetched or written`);
  }

  // Files on a USB disk: the list and its signature beside it.
  const local = await runCli(['iso', 'boot', iso, '--sums', join(web, 'good', 'SHA256SUMS'), '--keyring', key.keyring, '--no-kexec', '--out', join(dir, 'sums-local')]);
  assert.equal(local.code, 0, local.stderr);
  const usage = await runCli(['iso', 'boot', iso, '--keyring', key.keyring]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--keyring is for checking --sums: give both/);
});
