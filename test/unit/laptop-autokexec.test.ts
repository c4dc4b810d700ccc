import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AutokexecGate } from '../../src/laptop/autokexec-gate';
import { serverCmdline } from '../../src/cmdline/stiefelos-cmdline';
import { parseSessions } from '../../src/laptop/notify';
import { ReplayGuard } from '../../src/discovery/replay-guard';

test('the gate: one countdown at a time, a hold-off after a cancel, a pause after a failure', () => {
  const g = new AutokexecGate({ holdoffMs: 600_000, retryMs: 60_000 });
  assert.deepEqual(g.trigger(0), { start: true });
  assert.deepEqual(g.trigger(10), { start: false, why: 'counting down' });
  assert.equal(g.cancel(20), true);
  assert.equal(g.cancel(21), false, 'nothing left to cancel');
  assert.deepEqual(g.trigger(599_999), { start: false, why: 'held off after a cancel', untilMs: 600_020 });
  assert.deepEqual(g.trigger(600_020), { start: true });
  g.failed(700_000);
  assert.deepEqual(g.trigger(700_001), { start: false, why: 'paused after a failed attempt', untilMs: 760_000 });
  assert.deepEqual(g.trigger(760_000), { start: true });
  g.fire();
  assert.equal(g.state, 'firing');
  assert.deepEqual(g.trigger(760_001), { start: false, why: 'rebooting' });
  assert.equal(g.cancel(760_002), false, 'too late once the reboot is under way');
});

test("stiefelOS's command line: the server role and the running kernel's consoles", () => {
  assert.equal(serverCmdline('BOOT_IMAGE=/vmlinuz root=UUID=x ro quiet console=tty0 console=ttyS0,115200n8', ''), 'stiefel.role=server console=tty0 console=ttyS0,115200n8');
  assert.equal(serverCmdline('root=/dev/sda1', 'loglevel=4'), 'stiefel.role=server loglevel=4');
});

test('logged-in sessions from loginctl', () => {
  assert.deepEqual(parseSessions('     2 1000 anna seat0 tty2\n c1  120 gdm  seat0 tty1\n\n'), [
    { id: '2', uid: '1000', user: 'anna' },
    { id: 'c1', uid: '120', user: 'gdm' },
  ]);
});

test('a replay guard started from a saved floor refuses what an earlier run could have seen', () => {
  const now = 1_700_000_000_000;
  const first = new ReplayGuard({ maxSkewMs: 600_000 });
  assert.equal(first.check(now - 5_000, randomBytes(16), now), 'fresh');
  assert.equal(first.newestMs, now - 5_000);
  const second = new ReplayGuard({ maxSkewMs: 600_000, floorMs: first.newestMs });
  assert.equal(second.check(now - 5_000, randomBytes(16), now), 'stale', 'captured before the restart');
  assert.equal(second.check(now - 4_000, randomBytes(16), now), 'fresh');
});
