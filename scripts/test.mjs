// Runs the test layers in order, fast to slow:
//   node scripts/test.mjs all | unit | interop | net | disk | package | vm ... [FILTER...]
// FILTER words keep only test files whose path contains one of them; a word
// starting with + must be in the path as well (`vm +e2e journey`: the e2e
// files, only the journey).
// Each layer is a folder under test/ whose *.test.ts files run with node:test
// (TypeScript through tsx). Layers that drive real kernel features (network
// namespaces, loop devices, chroots, QEMU) need root and fail loudly without it.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const LAYERS = [
  { name: 'unit', concurrency: 2, root: false },
  { name: 'interop', concurrency: 2, root: false },
  { name: 'net', concurrency: 1, root: true },
  { name: 'disk', concurrency: 1, root: true },
  { name: 'package', concurrency: 1, root: true },
  { name: 'vm', concurrency: 1, root: true },
];

const args = process.argv.slice(2);
const wanted = new Set();
const filters = [];
const required = [];
for (const a of args) {
  if (a === 'all') LAYERS.forEach((l) => wanted.add(l.name));
  else if (LAYERS.some((l) => l.name === a)) wanted.add(a);
  else if (a.startsWith('+')) required.push(a.slice(1));
  else filters.push(a);
}
if (wanted.size === 0) LAYERS.forEach((l) => wanted.add(l.name));

function testFiles(dir) {
  let out = [];
  let names;
  try { names = readdirSync(dir).sort(); } catch { return out; }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(testFiles(path));
    else if (name.endsWith('.test.ts')) out.push(path);
  }
  return out;
}

// A whole run builds the VM layer's images in the background meanwhile
// (test/helpers/prebuild.ts): on a new machine they are the slowest part of
// the suite, and the other layers leave the disk and the network idle.
let prebuild;
if (wanted.has('vm') && wanted.size > 1 && filters.length === 0 && required.length === 0 && process.getuid?.() === 0) {
  const log = join(tmpdir(), 'stiefel-prebuild.log');
  const fd = openSync(log, 'w');
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/prebuild.ts'], { cwd: root, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  prebuild = { log, started, done: new Promise((resolve) => child.on('close', (code) => resolve(code))) };
  console.log(`test: building the VM layer's images in the background (log: ${log})`);
}

let failed = [];
let ran = 0;
for (const layer of LAYERS) {
  if (!wanted.has(layer.name)) continue;
  if (layer.name === 'vm' && prebuild) {
    const code = await prebuild.done;
    const tail = readFileSync(prebuild.log, 'utf8').trim().split('\n').slice(code === 0 ? -1 : -15).join('\n');
    console.log(`\ntest: the VM layer's images ${code === 0 ? 'are built' : `were not all built (exit ${code}): the tests build what is missing`} (${((Date.now() - prebuild.started) / 1000).toFixed(0)} s since the start)\n${tail}`);
  }
  let files = testFiles(join(root, 'test', layer.name));
  if (filters.length) files = files.filter((f) => filters.some((w) => relative(root, f).includes(w)));
  if (required.length) files = files.filter((f) => required.every((w) => relative(root, f).includes(w)));
  if (files.length === 0) continue;
  ran += files.length;
  if (layer.root && process.getuid && process.getuid() !== 0) {
    console.error(`test: the ${layer.name} layer drives kernel features and needs root: run it with sudo`);
    failed.push(layer.name);
    continue;
  }
  const started = Date.now();
  console.log(`\n=== ${layer.name} (${files.length} files)`);
  const r = spawnSync(process.execPath, [
    '--import', 'tsx', '--test', `--test-concurrency=${layer.concurrency}`,
    '--test-reporter=spec', ...files.map((f) => relative(root, f)),
  ], { cwd: root, stdio: 'inherit' });
  console.log(`=== ${layer.name}: ${r.status === 0 ? 'passed' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed.push(layer.name);
}
if (ran === 0) {
  // A filter that matches nothing must not pass as if tests had run.
  console.error(`test: no test file in ${[...wanted].join(', ')} matches ${[...required.map((r) => `'${r}' and`), filters.map((f) => `'${f}'`).join(' or ')].join(' ')} (test/LAYER/*.test.ts paths)`);
  process.exit(1);
}
if (failed.length) {
  console.error(`\ntest: failed layers: ${failed.join(', ')}`);
  process.exit(1);
}
