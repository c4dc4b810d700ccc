// The .deb as dpkg-deb and lintian see it: control fields, the file list with
// modes and owners, the adapters byte for byte as setup-server-os writes
// them, the copyright file of the bundled npm packages, the docs, a
// reproducible build, and lintian with neither errors nor warnings.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ATTACH_PATH, BOOT_RECORD_PATH, RECONNECT_PATH, desiredFiles } from '../../src/server-os/plan';
import { BUSYBOX, IMAGE_PROGRAMS } from '../../src/image/programs';
import { PACKAGES } from '../../src/image/packages';
import { CLI, REPO_ROOT, run } from '../helpers/cli';
import { buildDeb, debContents, debControl, dependsGroups, parseDeb822, PACKAGE_SCRIPT } from '../helpers/deb';
import { requireTool } from '../helpers/tools';

const PKG = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string; license: string };
const DOC = '/usr/share/doc/stiefelsystem';
let dir = '';
let deb = '';
let tree = '';

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const fromDeb = (path: string) => readFileSync(join(tree, path));

before(() => {
  for (const tool of ['dpkg-deb', 'lintian', 'man', 'dpkg-query']) requireTool(tool);
  dir = mkdtempSync(join(tmpdir(), 'stf14-deb-'));
  deb = buildDeb(join(dir, 'out'));
  tree = join(dir, 'tree');
  execFileSync('dpkg-deb', ['-x', deb, tree]);
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('control: the name, the version of package.json, Architecture all, and Depends on Debian nodejs (>= 18) and every laptop-side tool', () => {
  assert.equal(deb.endsWith(`/stiefelsystem_${PKG.version}_all.deb`), true, deb);
  const c = debControl(deb);
  assert.equal(c.get('Package'), 'stiefelsystem');
  assert.equal(c.get('Version'), PKG.version);
  assert.equal(c.get('Architecture'), 'all');
  assert.match(c.get('Maintainer') ?? '', /^.+ <[^@\s]+@[^@\s]+>$/);
  assert.ok(c.get('Description')?.includes('\n .\n'), 'a long description in paragraphs');
  const depends = c.get('Depends') ?? '';
  assert.match(depends, /(^|, )nodejs \(>= 18\)(,|$)/);
  const groups = dependsGroups(depends);
  const named = new Set(groups.flat());
  // What stiefelOS carries (build-image finds them on the laptop), what it
  // needs to build (depmod, zstd), and what the laptop OS's initramfs drives.
  const wanted = new Set([...IMAGE_PROGRAMS.map((p) => p.packages!.debian), BUSYBOX.packages!.debian, PACKAGES.zstd.debian, PACKAGES.kmod.debian, 'nbd-client', 'wireguard-tools']);
  for (const p of wanted) {
    if (named.has(p)) continue;
    // Debian policy: an Essential package is not named (lintian: depends-on-essential-package-without-using-version).
    const essential = execFileSync('dpkg-query', ['-W', '-f', '${Essential}', p], { encoding: 'utf8' }).trim();
    assert.equal(essential, 'yes', `${p} is neither in Depends nor Essential`);
  }
  assert.ok(groups.some((g) => g.includes('busybox-static') && g.includes('busybox')), 'busybox-static | busybox');
  // Installed-Size counts as dpkg-gencontrol does: KiB per file, rounded up, one per directory.
  const entries = debContents(deb).filter((e) => e.path !== '/');
  const size = entries.reduce((s, e) => s + (e.type === 'd' ? 1 : Math.ceil(e.size / 1024)), 0);
  assert.equal(c.get('Installed-Size'), String(size));
});

test('files: exactly these, owned by root, with these modes; the bundle is dist/stiefelctl.js', () => {
  const files = debContents(deb)
    .filter((e) => e.type !== 'd')
    .map((e) => `${e.type}${e.mode} ${e.owner} ${e.path}`);
  assert.deepEqual(files, [
    '-rw-r--r-- root/root /lib/systemd/system/stiefel-autokexec.service',
    '-rw-r--r-- root/root /lib/systemd/system/stiefel-laptop-watch.service',
    '-rw-r--r-- root/root /lib/systemd/system/stiefel-nbd-reconnect.service',
    '-rwxr-xr-x root/root /usr/bin/stiefelctl',
    '-rwxr-xr-x root/root /usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh',
    '-rwxr-xr-x root/root /usr/lib/dracut/modules.d/90stiefelsystem/stiefel-cmdline.sh',
    `-rwxr-xr-x root/root ${ATTACH_PATH}`,
    `-rwxr-xr-x root/root ${RECONNECT_PATH}`,
    '-rwxr-xr-x root/root /usr/lib/stiefelsystem/stiefelctl.js',
    `-rw-r--r-- root/root ${DOC}/README.md.gz`,
    `-rw-r--r-- root/root ${DOC}/changelog.gz`,
    `-rw-r--r-- root/root ${DOC}/copyright`,
    '-rwxr-xr-x root/root /usr/share/initramfs-tools/hooks/stiefelsystem',
    '-rwxr-xr-x root/root /usr/share/initramfs-tools/scripts/local-top/stiefelsystem',
    '-rw-r--r-- root/root /usr/share/man/man8/stiefelctl.8.gz',
  ]);
  for (const d of debContents(deb).filter((e) => e.type === 'd')) assert.equal(`${d.mode} ${d.owner}`, 'rwxr-xr-x root/root', d.path);
  assert.ok(fromDeb('usr/lib/stiefelsystem/stiefelctl.js').equals(readFileSync(CLI)), 'the bundle is dist/stiefelctl.js byte for byte');
  assert.match(fromDeb('usr/bin/stiefelctl').toString(), /^exec \/usr\/bin\/node \/usr\/lib\/stiefelsystem\/stiefelctl\.js "\$@"$/m);
  assert.ok(fromDeb('lib/systemd/system/stiefel-autokexec.service').equals(readFileSync(join(REPO_ROOT, 'assets/laptop/stiefel-autokexec.service'))));
  assert.ok(fromDeb('lib/systemd/system/stiefel-laptop-watch.service').equals(readFileSync(join(REPO_ROOT, 'assets/laptop/stiefel-laptop-watch.service'))));
  assert.ok(fromDeb('lib/systemd/system/stiefel-nbd-reconnect.service').equals(readFileSync(join(REPO_ROOT, 'assets/laptop/stiefel-nbd-reconnect.service'))));
});

test('the adapters are byte for byte and mode for mode what setup-server-os writes, so its plan finds nothing to change on shared paths', () => {
  const facts = { networkManager: false, networkd: false, mkinitcpioConf: null, bootMenu: { kind: 'none', why: 'test' } as const, packagedUnit: true };
  const want = (family: 'initramfs-tools' | 'dracut') => new Map(desiredFiles({ family, cmdline: 'root=/dev/sda1 ro' }, facts).filter((f) => f.content !== null).map((f) => [f.path, f]));
  const check = (debPath: string, planned: { content: string | null; mode: number } | undefined) => {
    assert.ok(planned, `setup-server-os plans a file for ${debPath}`);
    assert.equal(fromDeb(debPath.slice(1)).toString(), planned.content, debPath);
    assert.equal(statSync(join(tree, debPath)).mode & 0o7777, planned.mode, `mode of ${debPath}`);
  };
  const initramfsTools = want('initramfs-tools');
  check(ATTACH_PATH, initramfsTools.get(ATTACH_PATH));
  check(RECONNECT_PATH, initramfsTools.get(RECONNECT_PATH));
  // initramfs-tools reads hooks and scripts from /usr/share as from /etc.
  check('/usr/share/initramfs-tools/hooks/stiefelsystem', initramfsTools.get('/etc/initramfs-tools/hooks/stiefelsystem'));
  check('/usr/share/initramfs-tools/scripts/local-top/stiefelsystem', initramfsTools.get('/etc/initramfs-tools/scripts/local-top/stiefelsystem'));
  const dracut = want('dracut');
  for (const f of ['module-setup.sh', 'stiefel-cmdline.sh']) {
    const path = `/usr/lib/dracut/modules.d/90stiefelsystem/${f}`;
    check(path, dracut.get(path));
  }
  // Both families' initramfs hooks take the shared script from where the package puts it.
  assert.ok(fromDeb('usr/share/initramfs-tools/hooks/stiefelsystem').toString().includes(ATTACH_PATH));
  assert.ok(fromDeb('usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh').toString().includes(ATTACH_PATH));
});

test('maintainer scripts: valid sh; prerm undoes setup-server-os on removal when its record is there; purge removes the config, secret and images; the initramfs trigger', () => {
  const control = join(dir, 'control');
  execFileSync('dpkg-deb', ['-e', deb, control]);
  for (const s of ['postinst', 'prerm', 'postrm']) {
    const r = spawnSync('sh', ['-n', join(control, s)], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${s}: ${r.stderr}`);
    assert.equal(statSync(join(control, s)).mode & 0o777, 0o755, s);
  }
  const prerm = readFileSync(join(control, 'prerm'), 'utf8');
  assert.ok(prerm.includes(`BOOT_RECORD=${BOOT_RECORD_PATH}`), 'prerm looks for the record setup-server-os writes');
  assert.match(prerm, /stiefelctl setup-server-os --uninstall --yes/);
  assert.match(readFileSync(join(control, 'postrm'), 'utf8'), /purge\)[^]*rm -rf \/etc\/stiefelsystem \/var\/lib\/stiefelsystem/);
  for (const s of ['postinst', 'prerm', 'postrm']) assert.match(readFileSync(join(control, s), 'utf8'), /UNIT=stiefel-autokexec\.service\nWATCH_UNIT=stiefel-laptop-watch\.service\nRECONNECT_UNIT=stiefel-nbd-reconnect\.service\n/, s);
  const triggers = readFileSync(join(control, 'triggers'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
  assert.deepEqual(triggers, ['activate-noawait update-initramfs']);
});

test('copyright: DEP-5, GPL-3+ for stiefelsystem, and a paragraph with its license for every npm package in the bundle', () => {
  assert.equal(PKG.license, 'GPL-3.0-or-later', 'package.json changed its license: change packaging/deb/copyright.in too');
  const paragraphs = parseDeb822(fromDeb('usr/share/doc/stiefelsystem/copyright').toString());
  const [header, ...rest] = paragraphs;
  assert.equal(header?.get('Format'), 'https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/');
  assert.equal(header?.get('Upstream-Name'), 'stiefelsystem');
  const files = rest.filter((p) => p.has('Files'));
  const licenses = new Map(rest.filter((p) => !p.has('Files')).map((p) => [p.get('License')!.split('\n')[0]!, p.get('License')!]));
  assert.equal(files[0]?.get('Files'), '*');
  assert.equal(files[0]?.get('License'), 'GPL-3+');
  assert.match(licenses.get('GPL-3+') ?? '', /\/usr\/share\/common-licenses\/GPL-3/);
  // The npm packages esbuild put in, read from its metafile here independently.
  const meta = JSON.parse(readFileSync(join(REPO_ROOT, 'dist/stiefelctl.meta.json'), 'utf8')) as { inputs: Record<string, unknown> };
  const bundled = [...new Set(Object.keys(meta.inputs).filter((i) => i.startsWith('node_modules/')).map((i) => i.split('/').slice(0, i.split('/')[1]!.startsWith('@') ? 3 : 2).join('/')))];
  assert.ok(bundled.length > 0, 'the bundle holds npm packages');
  for (const dir of bundled) {
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, dir, 'package.json'), 'utf8')) as { name: string; version: string };
    const p = files.find((f) => f.get('Files') === `${dir}/*`);
    assert.ok(p, `a Files paragraph for ${dir}`);
    assert.ok(p.get('Copyright')?.trim(), `${pkg.name} has a copyright holder`);
    assert.ok(p.get('Comment')?.includes(`${pkg.name} ${pkg.version}`), `${pkg.name}'s version`);
    const text = licenses.get(p.get('License')!);
    assert.ok(text && text.split('\n').length > 2, `the text of ${p.get('License')} is there for ${pkg.name}`);
  }
  for (const f of files) assert.ok(licenses.has(f.get('License')!), `a License paragraph for ${f.get('License')}`);
});

test('docs: changelog.gz and README.md.gz are gzip -9n of their sources; the man page holds every command with its --help text and renders without warnings', async () => {
  const gz = (p: string) => {
    const data = fromDeb(p);
    assert.deepEqual([...data.subarray(4, 8)], [0, 0, 0, 0], `${p}: no time stamp`);
    assert.equal(data[3]! & 0x08, 0, `${p}: no file name`);
    assert.equal(data[8], 2, `${p}: maximum compression`);
    return gunzipSync(data);
  };
  assert.ok(gz('usr/share/doc/stiefelsystem/changelog.gz').equals(readFileSync(join(REPO_ROOT, 'packaging/deb/changelog'))));
  assert.ok(gz('usr/share/doc/stiefelsystem/README.md.gz').equals(readFileSync(join(REPO_ROOT, 'README.md'))));
  const man = gz('usr/share/man/man8/stiefelctl.8.gz').toString();
  assert.match(man, /^\.TH STIEFELCTL 8 /);
  const main = await run(process.execPath, [CLI, '--help']);
  const names = [...main.stdout.matchAll(/^ {2}(\S+) {2,}\S/gm)].map((m) => m[1]!);
  assert.ok(names.length >= 5, main.stdout);
  for (const name of names) {
    assert.ok(man.includes(`.SS "${name}"`), `the man page has a section for ${name}`);
    const help = await run(process.execPath, [CLI, name, '--help']);
    const usage = help.stdout.split('\n')[0]!.replace(/\\/g, '\\e').replace(/-/g, '\\-');
    assert.ok(man.includes(usage), `${name}'s --help text is in the man page`);
  }
  const r = spawnSync('man', ['--warnings', '-E', 'UTF-8', '-l', '-Tutf8', '-Z', join(tree, 'usr/share/man/man8/stiefelctl.8.gz')], {
    encoding: 'utf8',
    env: { ...process.env, MANWIDTH: '80' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '', 'groff warns about nothing');
});

test('reproducible: two builds are byte-identical; SOURCE_DATE_EPOCH sets every time stamp', () => {
  const again = buildDeb(join(dir, 'again'));
  assert.equal(sha256(readFileSync(again)), sha256(readFileSync(deb)));
  const dated = buildDeb(join(dir, 'dated'), { ...process.env, SOURCE_DATE_EPOCH: '86400' });
  const stamps = new Set(execFileSync('dpkg-deb', ['-c', dated], { encoding: 'utf8' }).split('\n').filter(Boolean).map((l) => l.split(/\s+/).slice(3, 5).join(' ')));
  assert.deepEqual([...stamps], ['1970-01-02 00:00']);
});

test('the package script: a mistake is one line naming the fix', () => {
  const bad = spawnSync(process.execPath, ['--import', 'tsx', PACKAGE_SCRIPT, '--bogus'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr, "package: unknown argument '--bogus'; usage: npm run package [-- --out DIR]\n");
  const epoch = spawnSync(process.execPath, ['--import', 'tsx', PACKAGE_SCRIPT, '--out', join(dir, 'x')], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, SOURCE_DATE_EPOCH: 'yesterday' },
  });
  assert.equal(epoch.status, 1);
  assert.equal(epoch.stderr, "package: SOURCE_DATE_EPOCH must be whole seconds since 1970, not 'yesterday'\n");
});

test('lintian: no errors and no warnings', (t) => {
  const r = spawnSync('lintian', ['--info', '--display-info', '--pedantic', '--display-experimental', deb], { encoding: 'utf8' });
  const tags = r.stdout.split('\n').filter((l) => /^[EWIPXO]: /.test(l));
  const bad = tags.filter((l) => /^[EW]: /.test(l));
  assert.deepEqual(bad, [], `lintian:\n${r.stdout}${r.stderr}`);
  assert.ok(r.status === 0 || tags.length > 0, r.stderr);
  for (const tag of tags) t.diagnostic(tag);
});
