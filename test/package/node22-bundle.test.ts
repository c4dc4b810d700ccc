// The bundle on Node 22, the newest Node the package is meant for besides
// Debian 12's nodejs 18 (tested in deb-install) and the Node 20 the other
// layers run on: --version, init, boot-entries and an NBD session through
// nbdinfo, run by the Node 22 binary scripts/setup.sh fetched from npm.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, cliPath, REPO_ROOT, run } from '../helpers/cli';
import { serve } from '../helpers/nbd-serve';
import { requireTool } from '../helpers/tools';

const MADE_UP_RELEASE = '6.1.0-99-amd64'; // made-up release: the files boot-entries lists
let node22 = '';
let dir = '';

/** The Node 22 that scripts/setup.sh installs into .cache/node-22 (node-linux-ARCH from npm). */
function findNode22(): string {
  const modules = join(REPO_ROOT, '.cache', 'node-22', 'node_modules');
  const pkg = existsSync(modules) ? readdirSync(modules).find((n) => /^node-linux-/.test(n)) : undefined;
  const path = pkg ? join(modules, pkg, 'bin', 'node') : '';
  if (!path || !existsSync(path)) throw new Error("Node 22 is not in .cache/node-22: run 'scripts/setup.sh' (npm test does this first)");
  return path;
}

const PKG_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const cli = (args: string[]) => run(node22, [CLI, ...args]);

before(async () => {
  cliPath();
  requireTool('nbdinfo');
  node22 = findNode22();
  const version = await run(node22, ['--version']);
  assert.match(version.stdout, /^v22\./, `${node22} is Node 22`);
  dir = mkdtempSync(join(tmpdir(), 'stf14-node22-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

test('Node 22: --version, init and boot-entries', async () => {
  const version = await cli(['--version']);
  assert.deepEqual([version.code, version.stdout, version.stderr], [0, `stiefelctl ${PKG_VERSION}\n`, '']);
  const init = await cli(['init', '--config', join(dir, 'c.yaml')]);
  assert.equal(init.code, 0, init.stderr);
  assert.equal(statSync(join(dir, 'secret')).mode & 0o777, 0o600);
  mkdirSync(join(dir, 'boot'));
  writeFileSync(join(dir, 'boot', `vmlinuz-${MADE_UP_RELEASE}`), 'kernel');
  writeFileSync(join(dir, 'boot', `initrd.img-${MADE_UP_RELEASE}`), 'initrd');
  const entries = await cli(['boot-entries', join(dir, 'boot'), '--json']);
  assert.equal(entries.code, 0, entries.stderr);
  const list = JSON.parse(entries.stdout) as Array<Record<string, unknown>>;
  assert.deepEqual(list.map((e) => [e.source, e.version, e.default]), [['kernel-pair', MADE_UP_RELEASE, true]]);
});

test('Node 22: nbd-serve answers nbdinfo over a unix socket and stops cleanly on SIGTERM', async () => {
  const image = join(dir, 'disk.img');
  writeFileSync(image, Buffer.alloc(4 << 20, 7));
  const socket = join(dir, 'nbd.sock');
  const s = await serve(image, ['--name', 'disk'], { listen: `unix:${socket}`, node: node22 });
  try {
    const info = await run('nbdinfo', ['--size', `nbd+unix:///disk?socket=${socket}`]);
    assert.equal(info.stdout.trim(), String(4 << 20), info.stderr);
  } finally {
    const exit = await s.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, s.stderr());
  }
});
