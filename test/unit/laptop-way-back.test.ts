// The way back's decisions, with the console and the actions recorded: the
// real ones replace the running kernel (the end-to-end journey runs them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DiskHealth } from '../../src/disk/clean-check';
import { createStreamLogger } from '../../src/log';
import { createWayBack, type ConsoleIO, type WhenDone } from '../../src/laptop/way-back';

const clean: DiskHealth = { dirty: [], unchecked: [{ partition: 1, kind: 'vfat' as never }], clean: [2], tpmSealed: false };

function world(options: { health?: DiskHealth; keys?: Array<string | undefined>; whenDone?: WhenDone; delayS?: number; graceMs?: number }) {
  const done: string[] = [];
  const lines: string[] = [];
  const keys = [...(options.keys ?? [])];
  let wake: (() => void) | undefined;
  const console: ConsoleIO = {
    key: (ms, signal) =>
      new Promise((resolve) => {
        if (keys.length) return resolve(keys.shift());
        // No key: the countdown runs out at once; a long wait waits for the signal.
        if (ms < 60_000) return resolve(undefined);
        wake = () => resolve(undefined);
        signal.addEventListener('abort', () => resolve(undefined), { once: true });
      }),
  };
  const controller = new AbortController();
  const back = createWayBack({
    whenDone: options.whenDone ?? 'return',
    delayS: options.delayS ?? 10,
    reconnectGraceMs: options.graceMs ?? 0,
    console,
    log: createStreamLogger({ write: (l) => lines.push(l) }),
    signal: controller.signal,
    actions: {
      stopDisk: async () => void done.push('stop disk'),
      health: async () => options.health ?? clean,
      ownOs: async () => ({ kernel: '/run/stiefelsystem/payload/vmlinuz', initrd: '/run/stiefelsystem/payload/initrd.img', cmdline: 'root=UUID=1 ro' }),
      kexec: async (i) => void done.push(`kexec ${i.kernel} ${i.cmdline}`),
      reboot: async () => void done.push('reboot'),
      poweroff: async () => void done.push('poweroff'),
    },
  });
  return { back, done, lines, stop: () => controller.abort(), wake: () => wake?.() };
}

test('a goodbye and a clean disk: the disk stops, a countdown, then the laptop OS kexecs with its own command line', async () => {
  const w = world({});
  await w.back.goodbye('fd00::2', 'poweroff');
  assert.deepEqual(w.done, ['stop disk', 'kexec /run/stiefelsystem/payload/vmlinuz root=UUID=1 ro']);
  assert.match(w.lines.join(''), /said goodbye \(it does poweroff\)[\s\S]*the disk was left clean \(clean: partition 2; partition 1 \(vfat\) not checked here\)[\s\S]*returning to the laptop's own OS in 10 s; press any key/);
});

test('a key during the countdown stays; when_done stay and poweroff do what they say', async () => {
  const keyed = world({ keys: ['x'] });
  await keyed.back.goodbye('fd00::2', 'reboot');
  assert.deepEqual(keyed.done, ['stop disk']);
  assert.match(keyed.lines.join(''), /staying in stiefelOS \(a key was pressed\)/);
  const stay = world({ whenDone: 'stay' });
  await stay.back.goodbye('fd00::2', 'poweroff');
  assert.deepEqual(stay.done, ['stop disk']);
  const off = world({ whenDone: 'poweroff' });
  await off.back.goodbye('fd00::2', 'poweroff');
  assert.deepEqual(off.done, ['stop disk', 'poweroff']);
});

test('a disk left dirty, or a TPM-sealed key: no automatic kexec', async () => {
  const dirty = world({ health: { ...clean, dirty: [{ partition: 2, state: 'needs-recovery' }] }, keys: ['q', 'R'] });
  await dirty.back.goodbye('fd00::2', 'poweroff');
  assert.match(dirty.lines.join(''), /not left clean \(partition 2 needs journal recovery\): not returning by itself\. Press R/);
  // q does nothing; R returns anyway.
  assert.deepEqual(dirty.done, ['stop disk', 'kexec /run/stiefelsystem/payload/vmlinuz root=UUID=1 ro']);
  const tpm = world({ health: { ...clean, tpmSealed: true } });
  await tpm.back.goodbye('fd00::2', 'poweroff');
  assert.deepEqual(tpm.done, ['stop disk', 'reboot']);
  assert.match(tpm.lines.join(''), /sealed in its TPM, which would not unseal it after a kexec: returning through the firmware/);
});

test('a desktop that vanished: the risk is named and nothing happens until R, or until it comes back', async () => {
  const w = world({});
  const waiting = w.back.vanished('fe80::5054:ff:fede:2');
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(w.done, []);
  assert.match(w.lines.join(''), /left the disk without saying goodbye \(a crash, a power cut, or the cable\): it may still have the disk mounted, so this laptop does not return to its own OS by itself/);
  w.back.returned();
  await waiting;
  assert.deepEqual(w.done, []);
  assert.match(w.lines.join(''), /the desktop is back on the disk/);
  const r = world({ keys: ['r'] });
  await r.back.vanished('fe80::2');
  assert.deepEqual(r.done, ['stop disk', 'kexec /run/stiefelsystem/payload/vmlinuz root=UUID=1 ro']);
});

test('a desktop that connects again within the grace (its kernel gave a connection up and got a new one): no alarm, no R offered', async () => {
  // An R typed meanwhile is not read: the wait is for the desktop only.
  const w = world({ graceMs: 60_000, keys: ['r'] });
  const waiting = w.back.vanished('fd53::2');
  await new Promise((r) => setTimeout(r, 20));
  assert.match(w.lines.join(''), /the desktop at fd53::2 lost its disk connection without a goodbye; the disk stays held for it: waiting 60 s for it to connect again/);
  w.back.returned();
  await waiting;
  assert.match(w.lines.join(''), /the desktop at fd53::2 is back on the disk after 0 s \(a new connection\)/);
  assert.doesNotMatch(w.lines.join(''), /without saying goodbye|press R/);
  assert.deepEqual(w.done, []);
  // The grace runs out: then the risk is named.
  const late = world({ graceMs: 30 });
  const lateWait = late.back.vanished('fd53::2');
  await new Promise((r) => setTimeout(r, 100));
  assert.match(late.lines.join(''), /left the disk without saying goodbye/);
  late.back.returned();
  await lateWait;
  assert.match(late.lines.join(''), /the desktop is back on the disk/);
  // A desktop that detached the disk (NBD_CMD_DISC) will not connect again by itself: no grace.
  const detached = world({ graceMs: 60_000 });
  const detachedWait = detached.back.vanished('fd53::2', true);
  await new Promise((r) => setTimeout(r, 20));
  assert.doesNotMatch(detached.lines.join(''), /waiting 60 s|stays held/);
  assert.match(detached.lines.join(''), /left the disk without saying goodbye/);
  detached.back.returned();
  await detachedWait;
  // The server stopping ends the grace quietly.
  const stopped = world({ graceMs: 60_000 });
  const stoppedWait = stopped.back.vanished('fd53::2');
  stopped.stop();
  await stoppedWait;
  assert.doesNotMatch(stopped.lines.join(''), /without saying goodbye/);
});
