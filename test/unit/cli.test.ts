import { test } from 'node:test';
import assert from 'node:assert/strict';
import { main, type MainIO } from '../../src/cli/main';
import { COMMANDS } from '../../src/commands';
import { runCli } from '../helpers/cli';

function io(argv: string[]): MainIO & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    argv,
    env: {},
    cwd: '/',
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    stderrIsTTY: false,
    signal: new AbortController().signal,
    out,
    err,
  };
}

test('--help lists every command and exits 0', async () => {
  const x = io(['--help']);
  assert.equal(await main(x, COMMANDS), 0);
  const text = x.out.join('');
  for (const name of ['nbd-serve', 'init', 'server', 'client', 'boot-entries', 'build-image', 'setup-server-os']) {
    assert.match(text, new RegExp(`^  ${name} `, 'm'));
  }
});

test('no command prints help and exits 2', async () => {
  const x = io([]);
  assert.equal(await main(x, COMMANDS), 2);
  assert.match(x.out.join(''), /Usage: stiefelctl COMMAND/);
});

test('an unknown command is one line naming the fix, exit 2', async () => {
  const x = io(['frobnicate']);
  assert.equal(await main(x, COMMANDS), 2);
  assert.equal(x.err.join(''), "stiefelctl: unknown command 'frobnicate'; run 'stiefelctl --help' for the list\n");
});

test('the bundled CLI runs with plain node', async () => {
  const r = await runCli(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^stiefelctl \d+\.\d+\.\d+\n$/);
});
