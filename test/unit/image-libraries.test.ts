import { test } from 'node:test';
import assert from 'node:assert/strict';
import { externalBuiltins, sharedBuiltinPaths } from '../../src/image/node-builtins';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../../src/errors';
import { expandDynamicTokens, matchGlob, parseLdSoConf } from '../../src/image/ld-so-conf';
import { libraryClosure, readLdSoConfDirs } from '../../src/image/libraries';
import { requireTool } from '../helpers/tools';
import { makeElf } from './fixtures/make-elf';

/** The libraries ldd lists for a program, as real paths (the vDSO has no file). */
function lddClosure(path: string): Set<string> {
  const out = execFileSync('ldd', [path], { encoding: 'utf8' });
  const paths = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m) paths.add(realpathSync(m[1]!));
  }
  return paths;
}

test('the library closure of each image program equals what ldd lists', async () => {
  requireTool('ldd');
  const confDirs = await readLdSoConfDirs();
  for (const name of ['kexec', 'ip', 'wg', 'cryptsetup', 'lvm', 'blkid', 'mount', 'modprobe']) {
    const program = requireTool(name);
    const closure = await libraryClosure([program], { confDirs });
    const ours = new Set([...closure.objects.keys()].filter((k) => k !== program).map((k) => realpathSync(k)));
    assert.deepEqual([...ours].sort(), [...lddClosure(program)].sort(), name);
  }
  const node = await libraryClosure([process.execPath], { confDirs });
  const ours = new Set([...node.objects.keys()].filter((k) => k !== process.execPath).map((k) => realpathSync(k)));
  assert.deepEqual([...ours].sort(), [...lddClosure(process.execPath)].sort(), 'node');
  assert.deepEqual([...node.interpreters], ['/lib64/ld-linux-x86-64.so.2']);
});

test('a static program has no libraries', async () => {
  const closure = await libraryClosure([requireTool('busybox')], { confDirs: [] });
  assert.equal(closure.objects.size, 1);
  assert.equal(closure.interpreters.size, 0);
});

test('RUNPATH with $ORIGIN is followed, and a library of the wrong class is passed over', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf5-libs-'));
  try {
    for (const d of ['bin', 'lib', 'lib32']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'bin/prog'), makeElf({ type: 2, needed: ['libstf5a.so.1'], runpath: '$ORIGIN/../lib32:$ORIGIN/../lib' }));
    writeFileSync(join(dir, 'lib32/libstf5a.so.1'), makeElf({ elfClass: 32, machine: 3, soname: 'libstf5a.so.1' }));
    writeFileSync(join(dir, 'lib/libstf5a.so.1'), makeElf({ soname: 'libstf5a.so.1', needed: ['libstf5b.so.2'], rpath: '$ORIGIN/inner' }));
    mkdirSync(join(dir, 'lib/inner'));
    writeFileSync(join(dir, 'lib/inner/libstf5b.so.2'), makeElf({ soname: 'libstf5b.so.2' }));
    const closure = await libraryClosure([join(dir, 'bin/prog')], { confDirs: [] });
    assert.deepEqual(
      [...closure.objects.keys()].map((k) => k.slice(dir.length)).sort(),
      ['/bin/prog', '/lib/inner/libstf5b.so.2', '/lib/libstf5a.so.1'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing library is one error naming the program and the library', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf5-libs-'));
  try {
    writeFileSync(join(dir, 'prog'), makeElf({ type: 2, needed: ['libstf5-missing.so.9'] }));
    await assert.rejects(libraryClosure([join(dir, 'prog')], { confDirs: [] }), (err: unknown) => {
      assert.ok(err instanceof StiefelError);
      assert.match(err.message, /prog needs the shared library libstf5-missing\.so\.9/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ld.so.conf: directories, includes, comments', () => {
  const conf = parseLdSoConf('# comment\ninclude /etc/ld.so.conf.d/*.conf\n/usr/local/lib  # trailing\n\n/opt/x:/opt/y\nhwcap 0 nosegneg\n');
  assert.deepEqual(conf.includes, ['/etc/ld.so.conf.d/*.conf']);
  assert.deepEqual(conf.dirs, ['/usr/local/lib', '/opt/x', '/opt/y']);
  assert.ok(matchGlob('*.conf', 'libc.conf'));
  assert.ok(!matchGlob('*.conf', 'libc.conf.bak'));
  assert.ok(matchGlob('x?.conf', 'x1.conf'));
  assert.equal(expandDynamicTokens('$ORIGIN/../lib:${ORIGIN}/x', '/opt/app/bin', true), '/opt/app/bin/../lib:/opt/app/bin/x');
});

test('the host ld.so.conf gives the multiarch directories', async () => {
  const dirs = await readLdSoConfDirs();
  assert.ok(dirs.includes('/lib/x86_64-linux-gnu'), dirs.join(' '));
  assert.ok(dirs.includes('/usr/lib/x86_64-linux-gnu'));
});

test("a node's built-in modules kept in other files (Debian's nodejs) are named by its build configuration", async () => {
  // As Debian's nodejs 18 records them: defines in target_defaults.
  assert.deepEqual(
    sharedBuiltinPaths({
      target_defaults: { defines: ['NODE_OPENSSL_CERT_STORE', 'NODE_SHARED_BUILTIN_CJS_MODULE_LEXER_LEXER_PATH=/usr/share/nodejs/cjs-module-lexer/lexer.js', 'NODE_SHARED_BUILTIN_UNDICI_UNDICI_PATH=/usr/share/nodejs/undici/undici-fetch.js'] },
      variables: { node_shared_builtin_acorn_path: '/usr/share/nodejs/acorn/dist/acorn.js', node_shared_openssl: true, node_shared_builtin_empty_path: '' },
    }),
    ['/usr/share/nodejs/acorn/dist/acorn.js', '/usr/share/nodejs/cjs-module-lexer/lexer.js', '/usr/share/nodejs/undici/undici-fetch.js'],
  );
  // The node running here tells its own (none for an upstream build).
  assert.deepEqual(await externalBuiltins(process.execPath), sharedBuiltinPaths(process.config as never));
});
