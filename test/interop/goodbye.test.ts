// The laptop OS's last shutdown step (assets/server-os/system-shutdown, run
// with the shells a Debian system has) against the laptop's goodbye
// listener, over loopback: only the token of this boot counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAsset } from '../../src/assets';
import { startGoodbyeListener, type Goodbye } from '../../src/laptop/goodbye';
import { createStreamLogger } from '../../src/log';
import { requireTool } from '../helpers/tools';

test('the shutdown hook says goodbye with the token the laptop issued; a wrong token is refused; no file, no goodbye', async (t) => {
  requireTool('bash');
  const dir = mkdtempSync(join(tmpdir(), 'stf14-goodbye-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seen: Goodbye[] = [];
  const lines: string[] = [];
  const listener = await startGoodbyeListener({ port: 0, host: '::1', onGoodbye: (g) => seen.push(g) }, { log: createStreamLogger({ write: (l) => lines.push(l) }) });
  t.after(() => listener.close());
  const link = listener.issue('fe80::5054:ff:fede:2');
  const hook = join(dir, 'stiefelsystem');
  writeFileSync(hook, readAsset('server-os/system-shutdown'), { mode: 0o755 });
  const conf = join(dir, 'goodbye.conf');
  // Not spawnSync: the listener answers from this very process.
  const run = (verb: string) =>
    new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const c = spawn('/bin/sh', [hook, verb], { env: { PATH: process.env.PATH, STIEFEL_GOODBYE_CONF: conf, STIEFEL_GOODBYE_SAY: 'stderr' }, timeout: 20_000 });
      let stdout = '';
      let stderr = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      c.on('close', (status) => resolve({ status, stdout, stderr }));
    });

  // A wrong token first: refused, nothing happens.
  writeFileSync(conf, `STIEFEL_GOODBYE_HOST=::1\nSTIEFEL_GOODBYE_PORT=${link.port}\nSTIEFEL_GOODBYE_TOKEN=${'0'.repeat(64)}\n`);
  const wrong = await run('poweroff');
  assert.equal(wrong.status, 0, 'a shutdown is never held up by the goodbye');
  assert.match(wrong.stderr, /could not say goodbye to the laptop at ::1/);
  assert.deepEqual(seen, []);
  assert.match(lines.join(''), /refused a goodbye from ::1: not the token of this boot/);

  // The right one: the laptop hears which desktop it was and how it shuts down.
  writeFileSync(conf, `STIEFEL_GOODBYE_HOST=::1\nSTIEFEL_GOODBYE_PORT=${link.port}\nSTIEFEL_GOODBYE_TOKEN=${link.token}\n`);
  const right = await run('reboot');
  assert.equal(right.status, 0, right.stderr);
  assert.match(right.stderr, /said goodbye to the laptop \(::1\)/);
  assert.deepEqual(seen, [{ host: 'fe80::5054:ff:fede:2', verb: 'reboot' }]);
  // Used once: the same token again is refused.
  await run('reboot');
  assert.equal(seen.length, 1);

  // A laptop OS not booted by stiefelsystem has no goodbye file: the hook does nothing.
  rmSync(conf);
  const none = await run('poweroff');
  assert.deepEqual([none.status, none.stdout, none.stderr], [0, '', '']);
});
