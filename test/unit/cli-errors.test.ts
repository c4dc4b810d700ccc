// The mistakes a user can make with the commands, through the real bundled
// CLI: each is one line naming the fix, with the right exit status, no stack
// trace, nothing hanging and nothing left behind.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, run, CLI, type RunResult } from '../helpers/cli';
import { requireTool } from '../helpers/tools';

const work = mkdtempSync(join(tmpdir(), 'stf12-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));
/** A command that hangs is killed after this long, and fails the test. */
const LIMIT_MS = 20_000;

function oneLine(r: RunResult, code: number, message: RegExp): void {
  assert.notEqual(r.signal, 'SIGTERM', `the command hung (killed after ${LIMIT_MS / 1000} s)`);
  assert.equal(r.code, code, r.stderr);
  assert.doesNotMatch(r.stderr, /^\s+at |internal error/m, `no stack trace:\n${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, message);
}

const cli = (args: string[]) => runCli(args, { timeout: LIMIT_MS, cwd: work });

test('init where no directory can be made: /sys, /proc, and another user where only root may write', async () => {
  oneLine(await cli(['init', '--config', '/sys/stf12/c.yaml']), 1, /^stiefelctl init: cannot make the config's directory \/sys\/stf12: operation not permitted \(EPERM\): choose another path$/);
  // Node's recursive mkdir spins forever here; this must end.
  oneLine(await cli(['init', '--config', '/proc/nonexistent/c.yaml']), 1, /^stiefelctl init: cannot make the config's directory \/proc\/nonexistent: no such file or directory \(ENOENT\): choose another path$/);
  const dir = join('/etc', `stf12-${process.pid}`);
  const asNobody = process.getuid?.() === 0 ? [requireTool('setpriv'), ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI]] as const : [process.execPath, [CLI]] as const;
  const r = await run(asNobody[0], [...asNobody[1], 'init', '--config', join(dir, 'c.yaml')], { timeout: LIMIT_MS, cwd: '/' });
  oneLine(r, 1, new RegExp(`^stiefelctl init: cannot make the config's directory ${dir}: permission denied \\(EACCES\\): run as root, or choose a path you may write$`));
  assert.ok(!existsSync(dir), 'nothing made');
});

test('a config path that is a directory, and a YAML alias bomb', async () => {
  const dir = join(work, 'confdir');
  mkdirSync(dir);
  for (const cmd of ['server', 'client']) {
    oneLine(await cli([cmd, '--config', dir]), 1, new RegExp(`^stiefelctl ${cmd}: config ${dir} is a directory: pass the config file itself \\(e\\.g\\. --config ${dir}/config\\.yaml\\)$`));
  }
  const bomb = join(work, 'bomb.yaml');
  const level = (name: string, of: string) => `${name}: &${name} [${Array(9).fill(`*${of}`).join(', ')}]`;
  writeFileSync(bomb, ['a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]', level('b', 'a'), level('c', 'b'), level('d', 'c'), level('e', 'd'), level('f', 'e'), level('g', 'f')].join('\n') + '\n');
  for (const cmd of ['server', 'client']) {
    oneLine(await cli([cmd, '--config', bomb]), 1, /: its YAML aliases expand too far \(more than 100 alias uses\): write the values out instead of \*aliases$/);
  }
});

test('an empty interface list, and a passphrase file that is not there', async () => {
  const conf = join(work, 'empty-list.yaml');
  writeFileSync(conf, 'network:\n  interfaces: []\n');
  oneLine(await cli(['client', '--config', conf]), 1, /network\.interfaces must be 'all' or a non-empty list of interface names, not an empty list$/);
  oneLine(await cli(['boot-entries', work, '--passphrase-file', '/nonexistent/pass']), 2, /^stiefelctl boot-entries: cannot read the passphrase file \/nonexistent\/pass: no such file or directory \(ENOENT\); fix --passphrase-file/);
});
