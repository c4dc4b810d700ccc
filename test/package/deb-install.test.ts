// The .deb on a Debian 12 laptop: a chroot of Debian's own packages (minbase
// with systemd, a kernel and initramfs-tools, as a laptop has) where
//   apt installs it with only Debian's archive, pulling nodejs 18 and Depends;
//   stiefelctl runs under that nodejs 18 (init, boot-entries, build-image);
//   the autokexec and laptop-watch units are in place, not enabled, and systemd-analyze accepts them;
//   the update-initramfs trigger puts the packaged hook into the initramfs;
//   setup-server-os sets the laptop up, and apt purge undoes it in prerm;
// and afterwards the chroot's file list is that of the same system which
// never had stiefelsystem: a second copy given exactly the packages apt
// pulled in (same versions), without it.
import { spawnSync } from 'node:child_process';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BOOT_RECORD_PATH } from '../../src/server-os/plan';
import { REPO_ROOT } from '../helpers/cli';
import { buildDeb, debControl, dependsGroups } from '../helpers/deb';
import { debianBase, PACKAGE_LAPTOP_BASE, withChroot, type Chroot } from '../helpers/debian-chroot';
import { TEST_CACHE_DIR } from '../helpers/test-cache';
import { requireRoot, requireTool } from '../helpers/tools';

const PKG_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const UNIT = '/lib/systemd/system/stiefel-autokexec.service';
const WATCH_UNIT = '/lib/systemd/system/stiefel-laptop-watch.service';
const RECONNECT_UNIT = '/lib/systemd/system/stiefel-nbd-reconnect.service';
const MADE_UP_RELEASE = '6.1.0-99-amd64'; // made-up release: the files boot-entries lists
/**
 * Every path of the chroot's own file system is compared (find -xdev: /proc,
 * /sys, /dev and /run are other file systems, as on a running laptop) but
 * /var/cache/apt/archives, where the test's shared cache of downloaded .debs
 * is mounted. Logs, apt's lists and dpkg's backups need no exception: both
 * copies ran apt and dpkg, so both have them, and only paths and types are
 * compared, not contents.
 */
const NOT_COMPARED = [/^. \/var\/cache\/apt\/archives\//];

let dir = '';
let deb = '';
let base = '';
const debCache = join(TEST_CACHE_DIR, 'package-debs');
const workDir = join(TEST_CACHE_DIR, 'package-work');

before(async () => {
  requireRoot();
  for (const tool of ['debootstrap', 'dpkg-deb', 'chroot', 'mount', 'find']) requireTool(tool);
  dir = mkdtempSync(join(tmpdir(), 'stf14-install-'));
  deb = buildDeb(dir);
  base = await debianBase({
    ...PACKAGE_LAPTOP_BASE,
    cacheDir: TEST_CACHE_DIR,
    log: (l) => process.stderr.write(`${l}\n`),
  });
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** Installed packages, name to version. */
async function installed(c: Chroot): Promise<Map<string, string>> {
  const out = await c.must("dpkg-query -W -f '${db:Status-Abbrev}\\t${binary:Package}\\t${Version}\\n'");
  return new Map(
    out
      .split('\n')
      .filter((l) => l.startsWith('ii'))
      .map((l) => l.split('\t').slice(1) as [string, string]),
  );
}

function kernelRelease(c: Chroot): string {
  const releases = readdirSync(join(c.root, 'usr/lib/modules')).sort();
  assert.ok(releases.length > 0, 'the chroot has a kernel');
  return releases.at(-1)!;
}

async function initramfsList(c: Chroot): Promise<string[]> {
  return (await c.must(`lsinitramfs /boot/initrd.img-${kernelRelease(c)}`)).split('\n');
}

/** apt install ./stiefelsystem_*.deb: returns the packages it added or changed besides stiefelsystem, as name=version. */
async function installFromArchive(c: Chroot): Promise<string[]> {
  await c.must('apt-get update -qq');
  const sources = readFileSync(join(c.root, 'etc/apt/sources.list'), 'utf8').split('\n').filter((l) => /^deb\s/.test(l));
  assert.ok(sources.length > 0 && sources.every((l) => /^deb https?:\/\/deb\.debian\.org\//.test(l)), `only Debian's archive: ${sources.join('; ')}`);
  assert.deepEqual(readdirSync(join(c.root, 'etc/apt/sources.list.d')), []);
  const before = await installed(c);
  assert.equal(before.has('nodejs'), false, 'nodejs comes with the package');
  const name = deb.split('/').at(-1)!;
  copyFileSync(deb, join(c.root, 'tmp', name));
  await c.must(`apt-get install -y -q --no-install-recommends /tmp/${name}`);
  await c.must(`rm /tmp/${name}`);
  const now = await installed(c);
  assert.equal(now.get('stiefelsystem'), PKG_VERSION);
  // Every Depends, some alternative of each, from Debian's archive, which knows every alternative's name.
  for (const group of dependsGroups(debControl(deb).get('Depends')!)) {
    assert.ok(group.some((p) => now.has(p)), `installed: ${group.join(' | ')}`);
    for (const p of group) await c.must(`apt-cache show --no-all-versions ${p} > /dev/null`);
  }
  const policy = await c.must('apt-cache policy nodejs');
  const installedFrom = /\*\*\* \S+ \d+\n((?: {7,}\d+ .*\n)+)/.exec(policy)?.[1] ?? '';
  assert.match(installedFrom, /http:\/\/deb\.debian\.org\/\S+ bookworm/, `nodejs from Debian's archive:\n${policy}`);
  return [...now].filter(([p, v]) => p !== 'stiefelsystem' && before.get(p) !== v).map(([p, v]) => `${p}=${v}`).sort();
}

async function commandsUnderNodejs18(c: Chroot): Promise<void> {
  assert.match(await c.must('node --version'), /^v18\./, "Debian 12's nodejs is 18: this test is about it");
  assert.equal(await c.must('stiefelctl --version'), `stiefelctl ${PKG_VERSION}\n`);
  await c.must(`mkdir -p /tmp/x/boot && echo kernel > /tmp/x/boot/vmlinuz-${MADE_UP_RELEASE} && echo initrd > /tmp/x/boot/initrd.img-${MADE_UP_RELEASE}`);
  await c.must('stiefelctl init --config /tmp/x/c.yaml');
  assert.equal(statSync(join(c.root, 'tmp/x/secret')).mode & 0o777, 0o600);
  assert.match(readFileSync(join(c.root, 'tmp/x/c.yaml'), 'utf8'), /^# yaml-language-server: \$schema=config\.schema\.json$/m);
  assert.ok(existsSync(join(c.root, 'tmp/x/config.schema.json')));
  const entries = JSON.parse(await c.must('stiefelctl boot-entries /tmp/x/boot --json')) as Array<Record<string, unknown>>;
  assert.deepEqual(
    entries.map((e) => [e.source, e.version, e.kernel, e.default]),
    [['kernel-pair', MADE_UP_RELEASE, `/vmlinuz-${MADE_UP_RELEASE}`, true]],
  );
  assert.match(await c.must('stiefelctl build-image --help'), /^Usage: stiefelctl build-image /);
  await c.must('rm -rf /tmp/x');
}

/** build-image under nodejs 18 carries Debian's own node (a small program and libnode) into stiefelOS. */
async function buildImageUnderNodejs18(c: Chroot): Promise<void> {
  await c.must('[ -f /etc/stiefelsystem/config.yaml ] || stiefelctl init --force');
  const release = kernelRelease(c);
  const summary = JSON.parse(
    await c.must(`stiefelctl build-image --kernel /boot/vmlinuz-${release} --config /etc/stiefelsystem/config.yaml --secret /etc/stiefelsystem/secret --json`),
  ) as { programs: Array<{ name: string; path: string }>; libraries: string[]; kernel: { release: string } };
  assert.deepEqual(summary.programs.find((p) => p.name === 'node'), { name: 'node', path: '/usr/bin/node' });
  assert.ok(summary.libraries.some((l) => /\/libnode\.so\.\d+$/.test(l)), summary.libraries.join(' '));
  for (const f of ['vmlinuz', 'initrd.img']) assert.ok(statSync(join(c.root, 'var/lib/stiefelsystem/image', f)).size > 0, f);
  // That node starts inside the image, with nothing but what the image holds
  // (Debian's keeps some built-in modules in /usr/share/nodejs files).
  const unpacked = join(c.root, 'var/tmp/stiefelos-unpacked');
  await c.must('rm -rf /var/tmp/stiefelos-unpacked && mkdir -p /var/tmp/stiefelos-unpacked && cd /var/tmp/stiefelos-unpacked && zstd -dc /var/lib/stiefelsystem/image/initrd.img | cpio -idm --quiet');
  const ran = spawnSync(requireTool('chroot'), [unpacked, '/usr/bin/node', '-e', "require('node:https'); process.stdout.write(process.version)"], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', LD_LIBRARY_PATH: readFileSync(join(unpacked, 'etc/stiefelos/library-path'), 'utf8').trim() } });
  assert.equal(ran.status, 0, `node in the image: ${ran.stderr}`);
  assert.match(ran.stdout, /^v18\./);
  await c.must('rm -rf /var/tmp/stiefelos-unpacked');
}

async function unitInPlace(c: Chroot): Promise<void> {
  assert.ok(readFileSync(join(c.root, UNIT)).equals(readFileSync(join(REPO_ROOT, 'assets/laptop/stiefel-autokexec.service'))));
  assert.equal((await c.sh('systemctl is-enabled stiefel-autokexec.service')).stdout, 'disabled\n', 'the package does not enable autokexec');
  assert.ok(readFileSync(join(c.root, WATCH_UNIT)).equals(readFileSync(join(REPO_ROOT, 'assets/laptop/stiefel-laptop-watch.service'))));
  assert.equal((await c.sh('systemctl is-enabled stiefel-laptop-watch.service')).stdout, 'disabled\n', 'nor the laptop watch');
  assert.equal((await c.sh('systemctl is-enabled stiefel-nbd-reconnect.service')).stdout, 'disabled\n', 'nor the reconnect helper');
  const verify = await c.sh(`systemd-analyze verify ${UNIT} ${WATCH_UNIT} ${RECONNECT_UNIT}`);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.stderr, '', 'systemd-analyze has nothing to say');
}

async function initramfsHasTheHook(c: Chroot): Promise<void> {
  const files = await initramfsList(c);
  for (const want of [/^usr\/sbin\/stiefel-attach$/, /^scripts\/local-top\/stiefelsystem$/, /^usr\/sbin\/wg$/, /\/wireguard\.ko(\.[a-z]+)?$/, /\/nbd\.ko(\.[a-z]+)?$/]) {
    assert.ok(files.some((f) => want.test(f)), `the initramfs holds ${want}`);
  }
}

async function setUpThenPurge(c: Chroot, t: { diagnostic: (m: string) => void }): Promise<void> {
  // As a user does: init, then setup-server-os. A chroot has no mounted disk
  // to find, so the config names it (on the laptop itself setup finds it).
  await c.must('[ -f /etc/stiefelsystem/config.yaml ] || stiefelctl init --force');
  const none = await c.sh("stiefelctl setup-server-os --yes --cmdline 'root=/dev/vda2 ro'");
  assert.equal(none.code, 1);
  assert.match(none.stderr.trim(), /cannot tell which disk holds \/ .*: set server\.disk in \/etc\/stiefelsystem\/config\.yaml/);
  assert.equal(existsSync(join(c.root, BOOT_RECORD_PATH)), false, 'nothing written before the disk was known');
  await c.must("sed -i 's|^server:$|server:\\n  disk: /dev/vda|' /etc/stiefelsystem/config.yaml");
  await c.must("stiefelctl setup-server-os --yes --cmdline 'root=/dev/vda2 ro'");
  assert.ok(existsSync(join(c.root, BOOT_RECORD_PATH)));
  assert.ok(existsSync(join(c.root, '/boot/stiefelsystem/initrd.img')), 'stiefelOS for this laptop, built under nodejs 18');
  assert.equal(readlinkSync(join(c.root, '/etc/systemd/system/multi-user.target.wants/stiefel-autokexec.service')), '/lib/systemd/system/stiefel-autokexec.service', 'autokexec enabled');
  assert.equal(readlinkSync(join(c.root, '/etc/systemd/system/multi-user.target.wants/stiefel-laptop-watch.service')), WATCH_UNIT, 'the laptop watch enabled');
  assert.equal(readlinkSync(join(c.root, '/etc/systemd/system/multi-user.target.wants/stiefel-nbd-reconnect.service')), RECONNECT_UNIT, 'the reconnect helper enabled');
  // Its Python runs under the python3 the package pulled in (Debian 12's).
  const helper = await c.sh('STIEFEL_NBD_CONF=/nonexistent /usr/lib/stiefelsystem/stiefel-nbd-reconnect --check');
  assert.equal(helper.code, 1);
  assert.match(helper.stderr.trim(), /^stiefelsystem: cannot read \/nonexistent \(No such file or directory\): this OS was not attached by stiefel-attach$/);
  // An upgrade runs prerm too, and must leave the set-up laptop as it is.
  await c.must(`/var/lib/dpkg/info/stiefelsystem.prerm upgrade ${PKG_VERSION}`);
  assert.ok(existsSync(join(c.root, BOOT_RECORD_PATH)), 'prerm upgrade keeps the setup');
  // setup-server-os leaves the package's own files as the package installed them.
  const verify = await c.sh('dpkg --verify stiefelsystem');
  t.diagnostic(`dpkg --verify stiefelsystem after setup-server-os: ${verify.stdout.trim() || 'nothing changed'}`);
  assert.equal(verify.stdout.trim(), '', 'dpkg --verify finds the package as it installed it');
  assert.equal(existsSync(join(c.root, '/etc/initramfs-tools/hooks/stiefelsystem')), false, 'no /etc copy of the packaged hook');
  const purge = await c.sh('apt-get purge -y -q stiefelsystem');
  assert.equal(purge.code, 0, `${purge.stdout}\n${purge.stderr}`);
  assert.match(purge.stdout, /running 'stiefelctl setup-server-os --uninstall --yes'/, 'prerm undid the setup');
  for (const gone of [BOOT_RECORD_PATH, '/etc/stiefelsystem', '/var/lib/stiefelsystem', '/boot/stiefelsystem', '/etc/initramfs-tools/hooks/stiefelsystem', '/usr/bin/stiefelctl', '/etc/kernel/postinst.d/zz-stiefelsystem', '/usr/lib/systemd/system-shutdown/stiefelsystem', '/etc/systemd/system/multi-user.target.wants/stiefel-autokexec.service', '/etc/systemd/system/multi-user.target.wants/stiefel-laptop-watch.service', '/etc/systemd/system/multi-user.target.wants/stiefel-nbd-reconnect.service']) {
    assert.throws(() => lstatSync(join(c.root, gone)), /ENOENT/, `${gone} is gone`);
  }
  assert.equal((await c.sh('dpkg-query -W stiefelsystem')).code, 1, 'dpkg forgot the package');
  // The trigger rebuilt the initramfs once the hook was gone.
  assert.deepEqual((await initramfsList(c)).filter((f) => /stiefel/.test(f)), []);
}

const compared = (list: string[]) => list.filter((l) => !NOT_COMPARED.some((re) => re.test(l)));

test('Debian 12: apt installs the .deb with nodejs 18 and its Depends from the archive; stiefelctl works; apt purge leaves the file list as if it never was', async (t) => {
  const started = Date.now();
  const step = (what: string) => t.diagnostic(`${what}: ${((Date.now() - started) / 1000).toFixed(0)} s`);
  let pulled: string[] = [];
  let afterPurge: string[] = [];
  let packagesAfter = new Map<string, string>();
  await withChroot({ base, workDir, debCache }, async (c) => {
    pulled = await installFromArchive(c);
    step(`installed, with ${pulled.length} packages from Debian's archive`);
    await commandsUnderNodejs18(c);
    await buildImageUnderNodejs18(c);
    step('commands ran under nodejs 18');
    await unitInPlace(c);
    await initramfsHasTheHook(c);
    step('unit and initramfs checked');
    await setUpThenPurge(c, t);
    step('set up, then purged');
    packagesAfter = await installed(c);
    afterPurge = compared(await c.fileList());
  });
  let never: string[] = [];
  await withChroot({ base, workDir, debCache }, async (c) => {
    await c.must('apt-get update -qq');
    await c.must(`apt-get install -y -q --no-install-recommends ${pulled.join(' ')}`);
    assert.deepEqual(await installed(c), packagesAfter, 'the second copy has the same packages');
    never = compared(await c.fileList());
  });
  step('the copy that never had it');
  assert.ok(never.includes('f /usr/bin/node') && never.length > 10_000, 'the lists hold the whole system');
  const neverSet = new Set(never);
  const afterSet = new Set(afterPurge);
  const onlyAfterPurge = afterPurge.filter((l) => !neverSet.has(l));
  const onlyNever = never.filter((l) => !afterSet.has(l));
  assert.deepEqual({ left: onlyAfterPurge, missing: onlyNever }, { left: [], missing: [] }, 'purge left the file list as it was');
});
