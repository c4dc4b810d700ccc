// Battery warnings of the laptop serving its disk. QEMU emulates no battery
// and this machine has none, so the power_supply directory is a copy shaped
// like sysfs that each test writes (as /sys/class/power_supply shows a
// laptop's adapter AC and battery BAT0); the beeps are checked as the bytes
// written: the console's BEL and the PC speaker's input events.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  consoleBeeper,
  EV_SND,
  findPcSpeaker,
  inputEvent,
  powerState,
  readPowerSupplies,
  SND_TONE,
  warningInterval,
  watchBattery,
} from '../../src/laptop/battery';
import { createStreamLogger } from '../../src/log';

const OPTIONS = { warnEveryS: 60, lowPercent: 20, lowEveryS: 10 };

function sysfs(supplies: Record<string, Record<string, string>>): string {
  const root = mkdtempSync(join(tmpdir(), 'stf15-psu-'));
  for (const [name, files] of Object.entries(supplies)) {
    mkdirSync(join(root, name));
    for (const [f, v] of Object.entries(files)) writeFileSync(join(root, name, f), `${v}\n`);
  }
  return root;
}

test('power state from sysfs: adapter online, on battery, low, no battery at all', async () => {
  const cases: Array<[Record<string, Record<string, string>>, { onBattery: boolean; capacity: number | undefined }]> = [
    [{ AC: { type: 'Mains', online: '1' }, BAT0: { type: 'Battery', capacity: '80', status: 'Charging' } }, { onBattery: false, capacity: 80 }],
    [{ AC: { type: 'Mains', online: '0' }, BAT0: { type: 'Battery', capacity: '55', status: 'Discharging' } }, { onBattery: true, capacity: 55 }],
    [{ ADP1: { type: 'Mains', online: '0' }, BAT0: { type: 'Battery', capacity: '30' }, BAT1: { type: 'Battery', capacity: '12' } }, { onBattery: true, capacity: 12 }],
    // No adapter listed: the battery's own status says it.
    [{ BAT0: { type: 'Battery', capacity: '90', status: 'Discharging' } }, { onBattery: true, capacity: 90 }],
    [{ BAT0: { type: 'Battery', capacity: '90', status: 'Full' } }, { onBattery: false, capacity: 90 }],
    // A desktop PC or a VM: nothing, or only a UPS-less mains.
    [{}, { onBattery: false, capacity: undefined }],
    [{ AC: { type: 'Mains', online: '0' } }, { onBattery: false, capacity: undefined }],
    [{ AC: { type: 'Mains', online: '0' }, BAT0: { type: 'Battery', capacity: 'garbage' } }, { onBattery: true, capacity: undefined }],
  ];
  for (const [supplies, want] of cases) {
    const root = sysfs(supplies);
    try {
      const state = powerState(await readPowerSupplies(root));
      assert.deepEqual({ onBattery: state.onBattery, capacity: state.capacity }, want, JSON.stringify(supplies));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  assert.deepEqual(await readPowerSupplies('/nonexistent/power_supply'), []);
});

test('warnings: none on mains, every minute on battery, every 10 s below 20 %', () => {
  assert.equal(warningInterval({ onBattery: false, capacity: 5, batteries: ['BAT0'] }, OPTIONS), undefined);
  assert.equal(warningInterval({ onBattery: true, capacity: 50, batteries: ['BAT0'] }, OPTIONS), 60_000);
  assert.equal(warningInterval({ onBattery: true, capacity: 19, batteries: ['BAT0'] }, OPTIONS), 10_000);
  assert.equal(warningInterval({ onBattery: true, capacity: undefined, batteries: ['BAT0'] }, OPTIONS), 60_000);
});

test('the beep: BEL on the console and a 1 kHz tone, then silence, as input events to the PC speaker', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf15-spkr-'));
  try {
    const speaker = join(dir, 'event-spkr');
    writeFileSync(speaker, '');
    const bells: string[] = [];
    // Found the way stiefelOS finds it: through sysfs.
    mkdirSync(join(dir, 'sys/devices/platform/pcspkr/input/input3/event7'), { recursive: true });
    mkdirSync(join(dir, 'dev/input'), { recursive: true });
    assert.equal(await findPcSpeaker(join(dir, 'sys'), join(dir, 'dev')), join(dir, 'dev/input/event7'));
    assert.equal(await findPcSpeaker(join(dir, 'nosys'), join(dir, 'dev')), undefined);
    await consoleBeeper({ bell: (t) => bells.push(t), speaker: async () => speaker, toneMs: 1 }).beep();
    assert.deepEqual(bells, ['\x07']);
    const written = readFileSync(speaker);
    assert.equal(written.length, 48);
    assert.deepEqual(written.subarray(0, 24), inputEvent(EV_SND, SND_TONE, 1000));
    assert.deepEqual(written.subarray(24), inputEvent(EV_SND, SND_TONE, 0));
    assert.equal(written.readUInt16LE(16), 0x12);
    assert.equal(written.readInt32LE(20), 1000);
    // No speaker device: the bell alone, no error.
    await consoleBeeper({ bell: (t) => bells.push(t), speaker: async () => join(dir, 'missing', 'spkr') }).beep();
    assert.equal(bells.length, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the watcher: warns at once on battery, again after the interval, faster when low, and says when mains is back', async () => {
  const root = sysfs({ AC: { type: 'Mains', online: '0' }, BAT0: { type: 'Battery', capacity: '50', status: 'Discharging' } });
  const ac = new AbortController();
  try {
    const out: string[] = [];
    const log = createStreamLogger({ write: (l) => out.push(l) });
    const lines = () => out;
    let now = 0;
    let beeps = 0;
    const w = watchBattery({ ...OPTIONS, powerSupply: root, pollMs: 3_600_000, beeper: { beep: async () => void beeps++ } }, { log, signal: ac.signal, now: () => now });
    const at = async (t: number) => {
      now = t;
      await w.check();
    };
    await at(0);
    await at(30_000);
    await at(60_000);
    writeFileSync(join(root, 'BAT0', 'capacity'), '15\n');
    await at(65_000); // low: the next warning comes within 10 s of now, not at 120 s
    await at(75_000);
    writeFileSync(join(root, 'AC', 'online'), '1\n');
    await at(80_000);
    await at(200_000);
    const warnings = lines().filter((l) => /runs on battery/.test(l));
    assert.equal(beeps, warnings.length);
    assert.deepEqual(
      warnings.map((l) => /\((.*?)\)/.exec(l)?.[1]),
      ['50 % left', '50 % left', '15 % left', '15 % left'],
    );
    assert.match(warnings[0]!, /plug it in; the desktop loses its disk when the battery dies/);
    assert.match(warnings[2]!, /plug it in now/);
    assert.equal(lines().filter((l) => /on mains power again/.test(l)).length, 1);
  } finally {
    ac.abort();
    rmSync(root, { recursive: true, force: true });
  }
});
