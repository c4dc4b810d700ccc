// The laptop OS on the desktop watching the laptop: what it says after each
// answer (pure rules, made-up times), and reading goodbye.conf as the
// initramfs attach script writes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { laptopWatchRules, parseGoodbyeConf, type Answer } from '../../src/laptop/laptop-watch';
import type { ServerStatus } from '../../src/laptop/status';

const RULES = { warnEveryS: 60, lowPercent: 20, lowEveryS: 10, silentAfterMs: 30_000, silentRepeatMs: 120_000 };
const TOKEN = 'ab'.repeat(32);

function status(power: Partial<ServerStatus['power']>): Answer {
  return {
    status: {
      version: 1,
      server: 'lap',
      startedAt: '2026-12-01T00:00:00.000Z',
      sampledAt: '2026-12-01T00:01:00.000Z',
      disk: null,
      desktop: null,
      traffic: null,
      links: [],
      power: { onBattery: false, capacity: undefined, batteries: [], mains: null, ...power },
      pairingCode: null,
    },
  };
}
const MAINS = status({ onBattery: false, batteries: ['BAT0'], capacity: 80, mains: true });
const battery = (capacity: number): Answer => status({ onBattery: true, capacity, batteries: ['BAT0'], mains: false });
const LOST: Answer = { error: 'no answer within 4.5 s' };

test('goodbye.conf: the address, port and token the attach script wrote; anything less is no address', () => {
  assert.deepEqual(parseGoodbyeConf(`STIEFEL_GOODBYE_HOST=fd3a::1\nSTIEFEL_GOODBYE_PORT=4645\nSTIEFEL_GOODBYE_TOKEN=${TOKEN}\n`), { host: 'fd3a::1', port: 4645, token: TOKEN });
  assert.deepEqual(parseGoodbyeConf(`STIEFEL_GOODBYE_HOST='fd3a::1'\nSTIEFEL_GOODBYE_PORT="4645"\nSTIEFEL_GOODBYE_TOKEN=${TOKEN}\n`)?.host, 'fd3a::1');
  assert.equal(parseGoodbyeConf(`STIEFEL_GOODBYE_HOST=fd3a::1\nSTIEFEL_GOODBYE_PORT=4645\n`), undefined, 'no token');
  assert.equal(parseGoodbyeConf(`STIEFEL_GOODBYE_HOST=fd3a::1\nSTIEFEL_GOODBYE_PORT=70000\nSTIEFEL_GOODBYE_TOKEN=${TOKEN}\n`), undefined, 'no such port');
  assert.equal(parseGoodbyeConf(`STIEFEL_GOODBYE_HOST=fd3a::1\nSTIEFEL_GOODBYE_PORT=4645\nSTIEFEL_GOODBYE_TOKEN=xyz\n`), undefined, 'not a token');
  assert.equal(parseGoodbyeConf(''), undefined);
});

test('on battery: a warning at once, every warn_every_s, every low_every_s below low_percent; mains again is said once', () => {
  const r = laptopWatchRules('fd3a::1', RULES);
  assert.deepEqual(r.observe(MAINS, 0), [], 'on mains nothing is said');
  const first = r.observe(battery(50), 5_000);
  assert.equal(first.length, 1);
  assert.match(first[0]!.text, /^the laptop runs on battery \(50 % left\): plug it in; the desktop loses its disk when the battery dies$/);
  assert.deepEqual([first[0]!.warn, first[0]!.urgent], [true, false]);
  assert.deepEqual(r.observe(battery(49), 35_000), [], 'not again within a minute');
  assert.equal(r.observe(battery(48), 65_000).length, 1, 'again after a minute');
  // Low: the minute's wait is cut to 10 s, and it is urgent.
  const low = r.observe(battery(19), 70_000);
  assert.equal(low.length, 1);
  assert.match(low[0]!.text, /19 % left\): plug it in now,/);
  assert.equal(low[0]!.urgent, true);
  assert.deepEqual(r.observe(battery(19), 75_000), []);
  assert.equal(r.observe(battery(18), 80_000).length, 1);
  assert.deepEqual(r.observe(MAINS, 85_000).map((s) => s.text), ['the laptop is on mains power again']);
  assert.deepEqual(r.observe(MAINS, 90_000), []);
  assert.equal(r.observe(battery(18), 95_000).length, 1, 'back on battery: at once');
});

test('silence: said after silent_after from the last answer, repeated every 2 min while it lasts, and the return with how long it took', () => {
  const r = laptopWatchRules('fd3a::1', RULES);
  r.observe(MAINS, 0);
  assert.deepEqual(r.observe(LOST, 5_000), []);
  assert.deepEqual(r.observe(LOST, 25_000), [], 'not before 30 s');
  const said = r.observe(LOST, 30_000);
  assert.deepEqual(
    said.map((s) => [s.text, s.urgent]),
    [['the laptop at fd3a::1 has not answered for 30 s: the cable is out or the laptop is off; programs that use the disk wait until it is back', true]],
  );
  assert.deepEqual(r.observe(LOST, 60_000), [], 'once, not every poll');
  assert.match(r.observe(LOST, 150_000)[0]!.text, /has not answered for 2 min:/);
  assert.deepEqual(r.observe(MAINS, 155_000).map((s) => s.text), ['the laptop at fd3a::1 answers again, after 2 min']);
  assert.deepEqual(r.observe(MAINS, 160_000), []);
  // A short gap is not worth a word either way.
  assert.deepEqual(r.observe(LOST, 170_000), []);
  assert.deepEqual(r.observe(MAINS, 175_000), []);
});

test('a watch started while the laptop is already silent counts from its first try', () => {
  const r = laptopWatchRules('fd3a::1', RULES);
  assert.deepEqual(r.observe(LOST, 1_000), []);
  assert.equal(r.observe(LOST, 31_000).length, 1);
});

test('refused (the laptop no longer knows this boot token): said once, the return from silence first', () => {
  const r = laptopWatchRules('fd3a::1', RULES);
  r.observe(MAINS, 0);
  r.observe(LOST, 40_000);
  const back = r.observe({ refused: true }, 45_000).map((s) => s.text);
  assert.equal(back.length, 2);
  assert.match(back[0]!, /answers again, after 45 s/);
  assert.match(back[1]!, /^the laptop at fd3a::1 no longer serves this desktop \(it refuses this boot's token: its server restarted\): save your work elsewhere and power off$/);
  assert.deepEqual(r.observe({ refused: true }, 50_000), []);
});
