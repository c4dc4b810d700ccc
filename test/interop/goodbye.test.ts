// The laptop OS's last shutdown step (assets/server-os/system-shutdown, run
// with the shells a Debian system has) against the laptop's goodbye
// listener, over loopback: only the token of this boot counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readAsset } from '../../src/assets';
import { startGoodbyeListener, type Goodbye } from '../../src/laptop/goodbye';
import { createStreamLogger } from '../../src/log';
import { cliPath, runCli } from '../helpers/cli';
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

test('the laptop watch (the real CLI) asks with the token: battery warnings on its console, silence when the laptop is gone, a refusal once its server restarted', { timeout: 60_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stf15-watch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let power = { onBattery: true, capacity: 15, batteries: ['BAT0'], mains: false };
  const logs: string[] = [];
  const log = createStreamLogger({ write: (l) => logs.push(l) });
  const status = () => ({
    version: 1,
    server: 'lap',
    startedAt: new Date(Date.now() - 120_000).toISOString(),
    sampledAt: new Date().toISOString(),
    disk: { path: '/dev/nvme0n1', export: 'disk' },
    desktop: { peer: '::1', since: new Date(Date.now() - 60_000).toISOString() },
    traffic: { bytesRead: 3 * 1024 ** 3, bytesWritten: 5 * 1024 ** 2, inFlight: 1, errors: 0, readPerS: 1024 ** 2, writtenPerS: 0 },
    links: [{ name: 'eth0', speedMbps: 1000, mtu: 1500, carrier: true }],
    power,
    pairingCode: null,
  });
  let listener = await startGoodbyeListener({ port: 0, host: '::1', onGoodbye: () => undefined, status }, { log });
  const link = listener.issue('::1');
  const conf = join(dir, 'goodbye.conf');
  writeFileSync(conf, `STIEFEL_GOODBYE_HOST=::1\nSTIEFEL_GOODBYE_PORT=${link.port}\nSTIEFEL_GOODBYE_TOKEN=${link.token}\n`);
  const config = join(dir, 'config.yaml');
  writeFileSync(config, 'server:\n  battery:\n    low_every_s: 2\n');
  const consoleFile = join(dir, 'console');
  writeFileSync(consoleFile, '');
  // No wall or notify-send on the way: PATH names an empty directory (so nothing is told to this machine's users).
  mkdirSync(join(dir, 'bin'));
  const child = spawn(process.execPath, [cliPath(), 'laptop-watch', '--every', '1', '--silent-after', '3', '--console', consoleFile, '--config', config, '--conf', conf], {
    env: { PATH: join(dir, 'bin') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  t.after(() => child.kill());
  const onConsole = () => readFileSync(consoleFile, 'utf8');
  const waitFor = async (re: RegExp, what: string): Promise<void> => {
    for (let i = 0; i < 200 && !re.test(onConsole()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(onConsole(), re, `${what}; stderr: ${stderr}`);
  };
  await waitFor(/^stiefelsystem: watching the laptop at ::1 \(every 1 s\)\r\n/, 'it starts');
  await waitFor(/stiefelsystem: the laptop runs on battery \(15 % left\): plug it in now, the desktop loses its disk when the battery dies\r\n/, 'the battery warning');
  // Below low_percent every low_every_s (2 s): a second warning follows.
  await waitFor(/(runs on battery[^\n]*\n[^]*){2}/, 'the warning repeated');
  // `stiefelctl status` on the desktop, where no server runs, asks the laptop the same way.
  const shown = await runCli(['status', '--conf', conf]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /^stiefelsystem: 'lap' serving since 2 min\ndisk     \/dev\/nvme0n1 \(export 'disk'\)\ndesktop  ::1, for 1 min\nread     3\.0 GiB/);
  assert.match(shown.stdout, /\npower    ON BATTERY, 15 %\n$/);
  power = { ...power, onBattery: false, mains: true };
  await waitFor(/stiefelsystem: the laptop is on mains power again\r\n/, 'mains again');
  // The laptop gone: after 3 s without an answer.
  await listener.close();
  await waitFor(/stiefelsystem: the laptop at ::1 has not answered for [3-9] s: the cable is out or the laptop is off; programs that use the disk wait until it is back\r\n/, 'the silence');
  // Its server back on the same port but with new tokens: this desktop's is refused.
  listener = await startGoodbyeListener({ port: link.port, host: '::1', onGoodbye: () => undefined, status }, { log });
  t.after(() => listener.close());
  await waitFor(/stiefelsystem: the laptop at ::1 answers again, after \d+ s\r\n/, 'the return');
  await waitFor(/stiefelsystem: the laptop at ::1 no longer serves this desktop/, 'the refusal');
  assert.match(logs.join(''), /refused a status request from ::1: not the token of this boot/);
  assert.equal((onConsole().match(/no longer serves/g) ?? []).length, 1, 'the refusal is said once');
  assert.equal(child.exitCode, null, 'the watch keeps running');
});

test('the laptop watch without goodbye.conf (a laptop OS not booted over the cable): one line naming why, exit 1', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'stf15-watch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'config.yaml'), 'server: {}\n');
  const r = await runCli(['laptop-watch', '--config', join(dir, 'config.yaml'), '--conf', join(dir, 'none.conf'), '--console', join(dir, 'console')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /there is no \S+none\.conf: this system was not booted over the cable by stiefelsystem \(with WireGuard\), so there is no laptop to watch/);
  const bad = await runCli(['laptop-watch', '--every', '0']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--every takes seconds from 1 to 3600, not '0'/);
});
