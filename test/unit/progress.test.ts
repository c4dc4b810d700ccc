import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatProgressBar, formatProgressLine, ProgressReporter, REDRAW_PREFIX } from '../../src/progress';

test('a progress line has bytes, percent, rate and time left', () => {
  assert.equal(formatProgressLine({ received: 50e6, total: 200e6, elapsedMs: 500 }), '50.0 MB of 200.0 MB (25%), 100.0 MB/s, 0:02 left');
  assert.equal(formatProgressLine({ received: 200e6, total: 200e6, elapsedMs: 2000 }), '200.0 MB of 200.0 MB (100%), 100.0 MB/s, done in 0:02');
  assert.equal(formatProgressLine({ received: 0, total: 2e9, elapsedMs: 0 }), '0 B of 2.00 GB (0%), 0 B/s, --:-- left');
  assert.equal(formatProgressLine({ received: 1e6, total: 4.6e9, elapsedMs: 1000 }), '1.0 MB of 4.60 GB (0%), 1.0 MB/s, 1:16:39 left');
  assert.equal(formatProgressBar({ received: 1, total: 4, elapsedMs: 1000 }, 8), '[##......] 1 B of 4 B (25%), 1 B/s, 0:03 left');
});

test('on a terminal the bar is redrawn in place, at most every interval', () => {
  let t = 0;
  const lines: string[] = [];
  const r = new ProgressReporter({ write: (l) => lines.push(l), tty: true, now: () => t });
  r.update(0, 100);
  t = 120;
  r.update(10, 100);
  t = 300;
  r.update(20, 100);
  t = 310;
  r.update(100, 100);
  r.update(100, 100);
  assert.equal(lines.length, 3);
  assert.ok(!lines[0]!.startsWith(REDRAW_PREFIX));
  assert.ok(lines[1]!.startsWith(REDRAW_PREFIX) && lines[2]!.startsWith(REDRAW_PREFIX));
  assert.match(lines[2]!, /\[#{24}\] 100 B of 100 B \(100%\)/);
});

test('without a terminal: plain lines, no escapes, every 2 s and at the end', () => {
  let t = 0;
  const lines: string[] = [];
  const r = new ProgressReporter({ write: (l) => lines.push(l), tty: false, now: () => t, label: 'downloading' });
  for (let i = 1; i <= 50; i++) {
    t = i * 100;
    r.update(i, 50);
  }
  assert.equal(lines.length, 3);
  assert.ok(lines.every((l) => !l.includes('\x1b') && l.startsWith('downloading ')));
  assert.match(lines.at(-1)!, /50 B of 50 B \(100%\)/);
});
