// build-image end to end on this host's kernel and programs, through the real
// bundled CLI (dist/stiefelctl.js). Not pure, but needs no root and takes
// seconds: reproducibility, contents, and every bad input of the issue.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeNewc, S_IFCHR, S_IFLNK, S_IFREG, type DecodedCpioEntry } from '../../src/cpio/newc';
import { main, type MainIO } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands';
import { StiefelError } from '../../src/errors';
import { kernelZstdSupport, locateKernel } from '../../src/image/kernel';
import { chooseCompression } from '../../src/image/build';
import type { BuildSummary } from '../../src/image/build';
import { CLI, runCli, type RunResult } from '../helpers/cli';
import { requireTool } from '../helpers/tools';
import { makeElf } from './fixtures/make-elf';
import { debianKernel, hostModuleDeps, hostModulePath } from '../helpers/kernel';

const S_IFMT = 0o170000;
const { path: KERNEL, release: RELEASE, modulesDir: MODULES } = debianKernel();
/** A host fact as a regular expression that matches it literally. */
const lit = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
const R = lit(RELEASE);
const work = mkdtempSync(join(tmpdir(), 'stf5-build-'));
after(() => rmSync(work, { recursive: true, force: true }));

const config = join(work, 'config.yaml');
const secret = join(work, 'secret');
writeFileSync(config, '# test config\nrole: server\n');
writeFileSync(secret, 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==\n', { mode: 0o600 });

function build(out: string, extra: string[] = [], env: Record<string, string> = {}): Promise<RunResult> {
  return runCli(['build-image', '--kernel', KERNEL, '--out', out, '--level', '3', ...extra], {
    env: { ...process.env, SOURCE_DATE_EPOCH: '1700000000', ...env },
  });
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function unpack(initrd: string): DecodedCpioEntry[] {
  requireTool('zstd');
  return decodeNewc(execFileSync('zstd', ['-dc', initrd], { maxBuffer: 1 << 30 })).entries;
}

/** Stderr holds progress lines and, last, the error: one line, no stack trace. */
function errorLine(r: RunResult): string {
  assert.doesNotMatch(r.stderr, /^\s+at /m, `no stack trace expected:\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  return lines[lines.length - 1]!;
}

function leftovers(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

let first: { out: string; summary: BuildSummary } | undefined;

test('two builds from the same inputs are byte-identical; SOURCE_DATE_EPOCH sets every time stamp', async () => {
  const outA = join(work, 'a');
  const outB = join(work, 'b');
  const a = await build(outA, ['--json', '--config', config, '--secret', secret]);
  assert.equal(a.code, 0, a.stderr);
  const summary = JSON.parse(a.stdout) as BuildSummary;
  first = { out: outA, summary };
  const b = await build(outB, ['--config', config, '--secret', secret]);
  assert.equal(b.code, 0, b.stderr);
  assert.equal(sha256(join(outA, 'initrd.img')), sha256(join(outB, 'initrd.img')));
  assert.equal(summary.initrd.sha256, sha256(join(outA, 'initrd.img')));
  // With the secret inside, the initrd is a key: root only, and said once.
  assert.equal(statSync(join(outA, 'initrd.img')).mode & 0o777, 0o600);
  assert.equal(a.stderr.match(/holds the shared secret \(mode 0600\)/g)?.length, 1, a.stderr);
  assert.equal(summary.kernel.sha256, sha256(KERNEL));
  assert.ok(readFileSync(join(outB, 'vmlinuz')).equals(readFileSync(KERNEL)));
  // The text summary of the second build names the same hash and every part.
  assert.match(b.stdout, new RegExp(`initrd\\.img .* sha256 ${summary.initrd.sha256}`));
  for (const part of ['kernel modules', 'node', 'programs and libraries', 'busybox', 'stiefelctl']) assert.match(b.stdout, new RegExp(`^    ${part} +[0-9.]+ (MiB|KiB)`, 'm'));
  assert.match(b.stdout, new RegExp(`^  kernel +${R} from ${lit(KERNEL)}$`, 'm'));
  assert.match(b.stdout, /^  modules +\d{3} /m);
  assert.match(b.stdout, /^  total [0-9.]+ MiB$/m);

  // A third build, uncompressed, with another SOURCE_DATE_EPOCH: every entry carries it.
  const outC = join(work, 'c');
  const c = await build(outC, ['--compress', 'none', '--json'], { SOURCE_DATE_EPOCH: '1600000000' });
  assert.equal(c.code, 0, c.stderr);
  const raw = readFileSync(join(outC, 'initrd.img'));
  assert.equal(statSync(join(outC, 'initrd.img')).mode & 0o777, 0o644, 'no secret inside: readable');
  assert.equal(raw.subarray(0, 6).toString(), '070701', 'uncompressed cpio');
  const sc = JSON.parse(c.stdout) as BuildSummary;
  assert.equal(sc.initrd.compression, 'none');
  assert.equal(sc.initrd.bytes, raw.length);
  const entries = decodeNewc(raw).entries;
  assert.ok(entries.length > 500);
  assert.ok(entries.every((e) => e.mtime === 1600000000));
  assert.ok(entries.every((e) => e.uid === 0 && e.gid === 0));
  assert.ok(unpack(join(outA, 'initrd.img')).every((e) => e.mtime === 1700000000));
});

test('the image holds the kernel’s modules with fresh depmod data, programs with their libraries, /init and the secrets', () => {
  assert.ok(first, 'the reproducibility test built the image');
  const { out, summary } = first;
  assert.equal(summary.kernel.release, RELEASE);
  assert.equal(summary.initrd.compression, 'zstd');
  assert.match(summary.initrd.compressionReason, new RegExp(`CONFIG_RD_ZSTD=y in /boot/config-${R}`));
  assert.ok(summary.modules.count > 300, `${summary.modules.count} modules`);
  const entries = unpack(join(out, 'initrd.img'));
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const resolve = (p: string): DecodedCpioEntry | undefined => {
    let parts = p.split('/').filter(Boolean);
    let done: string[] = [];
    for (let hops = 0; parts.length > 0 && hops < 40; ) {
      const name = parts.shift()!;
      if (name === '..') {
        done.pop();
        continue;
      }
      const e = byPath.get([...done, name].join('/'));
      if (e && (e.mode & S_IFMT) === S_IFLNK) {
        hops++;
        const target = e.data.toString();
        if (target.startsWith('/')) done = [];
        parts = [...target.split('/').filter(Boolean), ...parts];
        continue;
      }
      done.push(name);
    }
    return byPath.get(done.join('/'));
  };
  const file = (p: string): DecodedCpioEntry => {
    const e = resolve(p);
    assert.ok(e && (e.mode & S_IFMT) === S_IFREG, `${p} is a file in the image`);
    return e;
  };
  assert.equal(file('init').mode & 0o777, 0o755);
  assert.match(file('init').data.toString(), /stiefel\.role=/);
  assert.match(file('etc/nsswitch.conf').data.toString(), /^hosts:\s+files$/m);
  assert.match(file('etc/passwd').data.toString(), /^root:x:0:0:/);
  assert.match(file('etc/group').data.toString(), /^root:x:0:/);
  const console = byPath.get('dev/console')!;
  assert.equal(console.mode & S_IFMT, S_IFCHR);
  assert.deepEqual([console.rdevmajor, console.rdevminor], [5, 1]);
  assert.equal(file('etc/stiefelsystem/secret').mode & 0o777, 0o600);
  assert.ok(file('etc/stiefelsystem/secret').data.equals(readFileSync(secret)));
  assert.ok(file('etc/stiefelsystem/config.yaml').data.equals(readFileSync(config)));
  assert.ok(file('usr/lib/stiefelsystem/stiefelctl.js').data.equals(readFileSync(CLI)));
  assert.match(file('usr/bin/stiefelctl').data.toString(), /exec \/usr\/bin\/node \/usr\/lib\/stiefelsystem\/stiefelctl\.js/);
  // Every program, reachable where /init's PATH looks, with its interpreter.
  for (const p of ['usr/bin/node', 'bin/busybox', 'bin/sh', 'sbin/kexec', 'sbin/ip', 'usr/bin/wg', 'sbin/cryptsetup', 'sbin/lvm', 'sbin/vgchange', 'sbin/blkid', 'bin/mount', 'bin/umount', 'sbin/modprobe', 'lib64/ld-linux-x86-64.so.2']) {
    file(p);
  }
  assert.ok(file('usr/bin/node').data.length < readFileSync(process.execPath).length, 'node is stripped');
  for (const lib of summary.libraries) file(lib);
  // Modules: the wanted ones, with depmod's indexes regenerated for exactly this set.
  const modRoot = `lib/modules/${RELEASE}`;
  const dep = file(`${modRoot}/modules.dep`).data.toString();
  for (const name of ['nbd', 'wireguard', 'virtio_net', 'r8169', 'r8152', 'btrfs', 'dm_crypt']) {
    assert.match(dep, new RegExp(`^${lit(hostModulePath(name))}:`, 'm'), name);
  }
  const depLines = dep.trim().split('\n');
  assert.equal(depLines.length, summary.modules.count);
  for (const line of depLines) {
    for (const p of line.replace(':', '').split(/\s+/)) file(`${modRoot}/${p}`);
  }
  for (const bin of ['modules.dep.bin', 'modules.alias.bin', 'modules.alias', 'modules.softdep', 'modules.symbols.bin', 'modules.builtin.bin']) file(`${modRoot}/${bin}`);
  // No symlink points nowhere (but /etc/mtab, which points into /proc).
  for (const e of entries) {
    if ((e.mode & S_IFMT) !== S_IFLNK || e.path === 'etc/mtab') continue;
    assert.ok(resolve(e.path), `symlink /${e.path} -> ${e.data.toString()} resolves inside the image`);
  }
  assert.deepEqual(
    entries.map((e) => e.path),
    [...entries.map((e) => e.path)].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))),
    'entries are sorted',
  );
});

test('compression: zstd when the kernel config says CONFIG_RD_ZSTD=y and zstd is installed, else gzip', async () => {
  const zstdSupport = await kernelZstdSupport({ path: KERNEL, release: RELEASE, versionString: '', size: 0 }, `/lib/modules/${RELEASE}`);
  assert.deepEqual(zstdSupport, { known: true, zstd: true, source: `/boot/config-${RELEASE}` });
  const boot = join(work, 'old-boot');
  mkdirSync(boot);
  writeFileSync(join(boot, 'config-4.9.0-old'), 'CONFIG_RD_GZIP=y\n# CONFIG_RD_ZSTD is not set\n');
  const old = await kernelZstdSupport({ path: join(boot, 'vmlinuz-4.9.0-old'), release: '4.9.0-old', versionString: '', size: 0 }, '/nonexistent');
  assert.deepEqual(old, { known: true, zstd: false, source: join(boot, 'config-4.9.0-old') });
  const unknown = await kernelZstdSupport({ path: join(boot, 'vmlinuz-x'), release: 'x', versionString: '', size: 0 }, '/nonexistent');
  assert.deepEqual(unknown, { known: false });

  const base = { release: RELEASE, zstd: '/usr/bin/zstd' };
  assert.equal(chooseCompression({ ...base, requested: undefined, rd: zstdSupport }).compression, 'zstd');
  assert.equal(chooseCompression({ ...base, requested: undefined, rd: old }).compression, 'gzip');
  assert.equal(chooseCompression({ ...base, requested: undefined, rd: unknown }).compression, 'gzip');
  const noTool = chooseCompression({ ...base, zstd: undefined, requested: undefined, rd: zstdSupport });
  assert.equal(noTool.compression, 'gzip');
  assert.match(noTool.warning!, /zstd is not installed \('zstd' \(Debian, Fedora, Arch\)\)/);
  assert.equal(chooseCompression({ ...base, requested: 'none', rd: old }).compression, 'none');
  assert.throws(() => chooseCompression({ ...base, requested: 'zstd', rd: old }), /cannot unpack a zstd initramfs .*: use --compress gzip/);
  assert.throws(() => chooseCompression({ ...base, zstd: undefined, requested: 'zstd', rd: zstdSupport }), /'zstd' is not installed/);
});

interface BadCase {
  name: string;
  args: string[];
  env?: Record<string, string>;
  code: number;
  message: RegExp;
}

test('bad input: one line naming the fix, non-zero exit, and the old image untouched', async () => {
  const empty = join(work, 'empty-modules');
  mkdirSync(empty);
  // Modules built for another kernel (synthetic modules carrying another vermagic).
  const OTHER_RELEASE = '5.10.0-99-amd64'; // made-up release: the vermagic of modules built for another kernel
  const otherModules = join(work, 'modules-other');
  mkdirSync(join(otherModules, 'kernel'), { recursive: true });
  writeFileSync(join(otherModules, 'modules.dep'), 'kernel/nbd.ko:\nkernel/wireguard.ko:\n');
  for (const m of ['nbd', 'wireguard']) {
    writeFileSync(join(otherModules, `kernel/${m}.ko`), makeElf({ type: 1, sections: { '.modinfo': Buffer.from(`license=GPL\0vermagic=${OTHER_RELEASE} SMP mod_unload modversions \0name=${m}\0`) } }));
  }
  const notKernel = join(work, 'not-a-kernel');
  writeFileSync(notKernel, 'just text, not a kernel\n'.repeat(100));
  // A PATH with every tool the build needs except wg.
  const pathDir = join(work, 'path-without-wg', 'bin');
  mkdirSync(pathDir, { recursive: true });
  for (const t of ['kexec', 'ip', 'cryptsetup', 'lvm', 'blkid', 'mount', 'umount', 'modprobe', 'busybox', 'depmod', 'zstd', 'strip']) {
    symlinkSync(requireTool(t), join(pathDir, t));
  }
  const cases: BadCase[] = [
    {
      name: 'missing kernel',
      args: ['--kernel', '/nonexistent/vmlinuz-stf5'],
      code: 1,
      message: new RegExp(`kernel image /nonexistent/vmlinuz-stf5 does not exist: pass --kernel PATH to an installed kernel \\(installed: .*${lit(KERNEL)}`),
    },
    { name: 'not a kernel', args: ['--kernel', notKernel], code: 1, message: /is not an x86 Linux kernel image \(bzImage\)/ },
    {
      name: 'missing modules directory',
      args: ['--modules-dir', '/nonexistent/stf5-modules'],
      code: 1,
      message: new RegExp(`no kernel modules for ${R} at /nonexistent/stf5-modules: install 'linux-image-${R}' \\(Debian\\), .*Fedora.*Arch.*, or pass --modules-dir DIR$`),
    },
    {
      name: 'modules of another kernel',
      args: ['--modules-dir', otherModules],
      code: 1,
      message: new RegExp(`the modules in .*modules-other were built for kernel ${lit(OTHER_RELEASE)} \\(kernel/nbd\\.ko\\), not ${R}: pass --modules-dir ${lit(MODULES)}`),
    },
    { name: 'output path that is a file', args: ['--out', config], code: 1, message: /--out .*config\.yaml is a file, not a directory: choose a directory for vmlinuz and initrd\.img with --out DIR$/ },
    { name: 'modules directory without modules.dep', args: ['--modules-dir', empty], code: 1, message: new RegExp(`has no modules\\.dep: run 'depmod ${R}' as root`) },
    {
      name: 'a program that is not installed',
      args: [],
      env: { PATH: pathDir },
      code: 1,
      message: /program 'wg' is not installed \(not in .*path-without-wg\/bin.*\): install 'wireguard-tools' \(Debian, Fedora, Arch\)$/,
    },
    { name: 'an extra program that is not installed', args: ['--add-program', 'stf5-no-such-tool'], code: 1, message: /program 'stf5-no-such-tool' is not installed/ },
    {
      name: 'a module that does not exist for that kernel',
      args: ['--add-module', 'stf5_no_such_module'],
      code: 1,
      message: new RegExp(`module 'stf5_no_such_module' does not exist for kernel ${R} \\(asked for with --add-module; not in ${lit(MODULES)}/modules\\.dep or modules\\.builtin\\)$`),
    },
    { name: 'unknown compression', args: ['--compress', 'xz'], code: 2, message: /--compress must be one of zstd, gzip, none, not 'xz'/ },
    { name: 'missing config', args: ['--config', '/nonexistent/stf5.yaml'], code: 1, message: /config file \/nonexistent\/stf5\.yaml does not exist: write one with 'stiefelctl init'/ },
    { name: 'bad SOURCE_DATE_EPOCH', args: [], env: { SOURCE_DATE_EPOCH: 'yesterday' }, code: 2, message: /SOURCE_DATE_EPOCH must be whole seconds since 1970/ },
  ];
  for (const c of cases) {
    const out = join(work, `bad-${c.name.replace(/\W+/g, '-')}`);
    mkdirSync(out);
    writeFileSync(join(out, 'initrd.img'), 'the previous image');
    const r = await build(out, c.args, c.env);
    assert.equal(r.code, c.code, `${c.name}: exit code\n${r.stderr}`);
    const line = errorLine(r);
    assert.match(line, /^stiefelctl build-image: /, c.name);
    assert.match(line, c.message, c.name);
    assert.deepEqual(leftovers(out), ['initrd.img'], `${c.name}: nothing else written`);
    assert.equal(readFileSync(join(out, 'initrd.img'), 'utf8'), 'the previous image', `${c.name}: old image kept`);
  }
  // Inputs are checked before the output directory is even created.
  const fresh = join(work, 'never-created');
  const r = await build(fresh, ['--add-module', 'stf5_no_such_module']);
  assert.equal(r.code, 1);
  assert.ok(!existsSync(fresh), 'no output directory for a build that failed on its inputs');
});

test('an interrupted build leaves the previous initrd.img and no temporary files', async () => {
  const out = join(work, 'interrupted');
  mkdirSync(out);
  writeFileSync(join(out, 'initrd.img'), 'the previous image');
  const child = spawn(process.execPath, [CLI, 'build-image', '--kernel', KERNEL, '--out', out, '--level', '9'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let sent = false;
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
    if (!sent && stderr.includes('pack: ')) {
      sent = true;
      child.kill('SIGINT');
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.ok(sent, `the build reached the packing step:\n${stderr}`);
  assert.equal(code, 1, stderr);
  assert.match(stderr.trim().split('\n').at(-1)!, /^stiefelctl build-image: build-image was interrupted; nothing was written$/);
  assert.deepEqual(readdirSync(out), ['initrd.img']);
  assert.equal(readFileSync(join(out, 'initrd.img'), 'utf8'), 'the previous image');
});

test('running from source, the bundle must be named with --bundle', async () => {
  const err: string[] = [];
  const io: MainIO = {
    argv: ['build-image', '--kernel', KERNEL, '--out', join(work, 'from-source')],
    env: {},
    cwd: '/',
    stdout: () => undefined,
    stderr: (t) => err.push(t),
    stderrIsTTY: false,
    signal: new AbortController().signal,
  };
  assert.equal(await main(io, COMMANDS), 2);
  assert.match(err.join(''), /not running from the bundled stiefelctl\.js: pass --bundle PATH/);
  assert.ok(!existsSync(join(work, 'from-source')));
});

test('without --kernel the running kernel’s image is used, and its absence is one line listing what is installed', async () => {
  const boot = join(work, 'boot');
  mkdirSync(boot);
  writeFileSync(join(boot, 'vmlinuz-9.9.9-stf5'), 'x');
  await assert.rejects(locateKernel({ runningRelease: '6.99.0-stf5-none', bootDir: boot }), (e: unknown) => {
    assert.ok(e instanceof StiefelError);
    assert.equal(
      e.message,
      `the running kernel 6.99.0-stf5-none has no image at ${boot}/vmlinuz-6.99.0-stf5-none or /lib/modules/6.99.0-stf5-none/vmlinuz: pass --kernel PATH (installed: ${boot}/vmlinuz-9.9.9-stf5)`,
    );
    return true;
  });
  const found = await locateKernel({ runningRelease: RELEASE, bootDir: '/boot' });
  assert.equal(found.path, KERNEL);
  assert.equal(found.release, RELEASE);
});

test('compressed modules: .ko.zst go into a zstd image as plain .ko, .ko.xz as they are; depmod data names what is there', async () => {
  // A modules tree like Arch's (.ko.zst) and Fedora's (.ko.xz) at once, made
  // from this kernel's real modules. (No .ko.gz: Debian's depmod is built
  // without zlib and would not index them.)
  const zstd = requireTool('zstd');
  const xz = requireTool('xz');
  const depmod = requireTool('depmod');
  const host = `/lib/modules/${RELEASE}`;
  const dir = join(work, 'mixed-modules', RELEASE);
  // nbd, and wireguard with everything it needs; wireguard and every other
  // dependency as .ko.xz, the rest as .ko.zst.
  const wireguard = hostModulePath('wireguard');
  const wireguardDeps = hostModuleDeps(wireguard);
  const plan: Array<[string, 'zst' | 'xz']> = [
    [hostModulePath('nbd'), 'zst'],
    [wireguard, 'xz'],
    ...wireguardDeps.map((p, i): [string, 'zst' | 'xz'] => [p, i % 2 === 0 ? 'xz' : 'zst']),
  ];
  assert.ok(wireguardDeps.length >= 2, `wireguard needs ${wireguardDeps.join(', ')}`);
  for (const [p] of plan) assert.match(p, /\.ko$/, `${p}: this test compresses the host's plain .ko modules`);
  for (const [p, how] of plan) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    const data = readFileSync(`${host}/${p}`);
    const [tool, args] = how === 'zst' ? [zstd, ['-c', '-3']] : [xz, ['-c', '--check=crc32', '--lzma2=dict=1MiB']];
    writeFileSync(join(dir, `${p}.${how}`), execFileSync(tool, args, { input: data, maxBuffer: 1 << 26 }));
  }
  // The tree's own modules.dep, by depmod, names the compressed files.
  mkdirSync(join(work, 'mixed-base', 'lib'), { recursive: true });
  symlinkSync(join(work, 'mixed-modules'), join(work, 'mixed-base', 'lib', 'modules'));
  execFileSync(depmod, ['-b', join(work, 'mixed-base'), RELEASE]);
  const out = join(work, 'mixed-out');
  const r = await build(out, ['--modules-dir', dir, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as BuildSummary;
  assert.equal(summary.initrd.compression, 'zstd');
  const entries = unpack(join(out, 'initrd.img'));
  // lib/modules/RELEASE, wherever the host's /lib link puts it.
  const modRoot = entries.find((e) => e.path.endsWith(`lib/modules/${RELEASE}/modules.dep`))!.path.replace(/\/modules\.dep$/, '');
  const files = new Map(entries.filter((e) => e.path.startsWith(`${modRoot}/kernel/`) && (e.mode & S_IFMT) === S_IFREG).map((e) => [e.path.slice(modRoot.length + 1), e]));
  const expected = plan.map(([p, how]) => (how === 'xz' ? `${p}.xz` : p)).sort();
  assert.deepEqual([...files.keys()].sort(), expected);
  for (const [p, how] of plan) {
    if (how !== 'xz') assert.ok(Buffer.from(files.get(p)!.data).equals(readFileSync(`${host}/${p}`)), `${p} is carried decompressed, byte for byte`);
  }
  const dep = entries.find((e) => e.path === `${modRoot}/modules.dep`)!;
  const depText = Buffer.from(dep.data).toString();
  assert.deepEqual(
    depText.trim().split('\n').map((l) => l.split(':')[0]).sort(),
    expected,
  );
  // wireguard's line names each dependency as it is stored in the image.
  const stored = new Map(plan.map(([p, how]) => [p, how === 'xz' ? `${p}.xz` : p]));
  const wgLine = depText.split('\n').find((l) => l.startsWith(`${wireguard}.xz:`));
  assert.ok(wgLine, `modules.dep has a line for ${wireguard}.xz`);
  assert.deepEqual(wgLine.slice(wgLine.indexOf(':') + 1).trim().split(/\s+/).sort(), wireguardDeps.map((d) => stored.get(d)!).sort());
});
