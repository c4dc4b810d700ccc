// `stiefelctl status`: the sample (rates against the one before, links and
// power supplies from sysfs-shaped directories), its lines on an 80-column
// console, and the command asking a real socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatStatus, readLink, startStatusService, statusSampler, type DiskCounters } from '../../src/laptop/status';
import { silentLogger } from '../../src/log';
import { runCli } from '../helpers/cli';

function sysfs(dir: string, files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), `${text}\n`);
  }
}

test('the sample: rates of the last interval, the holder, links and power, drawn within 80 columns', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf-status-'));
  try {
    sysfs(join(dir, 'power'), { 'AC/type': 'Mains', 'AC/online': '0', 'BAT0/type': 'Battery', 'BAT0/capacity': '37', 'BAT0/status': 'Discharging' });
    sysfs(join(dir, 'net'), { 'eth0/speed': '1000', 'eth0/mtu': '1500', 'eth0/carrier': '1', 'usb0/speed': '-1', 'usb0/mtu': '9000', 'usb0/carrier': '0' });
    let t = 100_000;
    let c: DiskCounters = { bytesRead: 0, bytesWritten: 0, inFlight: 0, errors: 0 };
    const sample = statusSampler({
      server: 'lap',
      startedAt: 40_000,
      disk: { path: '/dev/nvme0n1', export: 'disk' },
      counters: () => c,
      holder: () => ({ peer: 'fd12::2', since: 70_000 }),
      links: () => ['usb0', 'eth0'],
      powerSupply: join(dir, 'power'),
      pairingCode: () => '123 456',
      now: () => t,
    });
    await sample();
    t += 2000;
    c = { bytesRead: 4 * 1024 ** 2, bytesWritten: 1024 ** 2, inFlight: 3, errors: 1 };
    const s = await sample();
    assert.equal(s.traffic?.readPerS, 2 * 1024 ** 2);
    assert.equal(s.traffic?.writtenPerS, 512 * 1024);
    assert.deepEqual(s.power, { onBattery: true, capacity: 37, batteries: ['BAT0'], mains: false });
    // Links come from this machine's sysfs in the sampler; readLink reads any directory.
    assert.deepEqual(await readLink('eth0', join(dir, 'net')), { name: 'eth0', speedMbps: 1000, mtu: 1500, carrier: true });
    assert.deepEqual(await readLink('usb0', join(dir, 'net')), { name: 'usb0', speedMbps: null, mtu: 9000, carrier: false });
    const lines = formatStatus({ ...s, links: [await readLink('eth0', join(dir, 'net')), await readLink('usb0', join(dir, 'net'))] }, t);
    assert.deepEqual(lines, [
      "stiefelsystem: 'lap' serving since 1 min",
      "disk     /dev/nvme0n1 (export 'disk')",
      'desktop  fd12::2, for 32 s',
      'read     4.0 MiB (2.0 MiB/s)   written 1.0 MiB (512.0 KiB/s)',
      'requests 3 in flight, 1 error',
      'links    eth0 1 Gbit/s, MTU 1500; usb0 no carrier, MTU 9000',
      'power    ON BATTERY, 37 %',
      'pairing  code 123 456 for a desktop that PXE-boots',
    ]);
    for (const l of lines) assert.ok(l.length <= 80);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stiefelctl status asks the socket (0600), prints the lines or the JSON; without a server, one line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf-status-'));
  const ac = new AbortController();
  try {
    const socketPath = join(dir, 'status.sock');
    const svc = await startStatusService(
      {
        sample: statusSampler({ server: 'lap', startedAt: Date.now() - 5000, holder: () => undefined, links: () => [], powerSupply: join(dir, 'none'), pairingCode: () => undefined }),
        socketPath,
      },
      { log: silentLogger, signal: ac.signal },
    );
    const human = await runCli(['status', '--socket', socketPath]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^stiefelsystem: 'lap' serving since [45] s\ndesktop  none connected\nlinks    none\npower    no battery\n$/);
    const json = await runCli(['status', '--socket', socketPath, '--json']);
    assert.equal(JSON.parse(json.stdout).server, 'lap');
    await svc.close();
    const none = await runCli(['status', '--socket', socketPath]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /^stiefelctl status: no stiefelsystem server runs here \(nothing answers at .*status\.sock\)/);
  } finally {
    ac.abort();
    rmSync(dir, { recursive: true, force: true });
  }
});
