// The status panel at the top of the laptop's console: the bytes it writes,
// played into a real terminal emulator (xterm.js's headless build, 80x25 as
// the Linux console starts) together with log lines, and the screen read
// back row by row.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Terminal } from '@xterm/headless';
import { consoleIsVirtualTerminal, PANEL_ROWS, panelClose, panelOn, panelUpdate } from '../../src/laptop/console-panel';
import { formatStatus, type ServerStatus } from '../../src/laptop/status';

const G = { rows: 25, cols: 80 };

function screen(): { term: Terminal; write(bytes: string): Promise<void>; rows(): string[] } {
  const term = new Terminal({ cols: G.cols, rows: G.rows, allowProposedApi: true, convertEol: true });
  return {
    term,
    write: (bytes) => new Promise((resolve) => term.write(bytes, resolve)),
    rows() {
      const b = term.buffer.active;
      return Array.from({ length: G.rows }, (_, i) => b.getLine(b.viewportY + i)!.translateToString(true));
    },
  };
}

const status = (over: Partial<ServerStatus> = {}): ServerStatus => ({
  version: 1,
  server: 'my-laptop',
  startedAt: new Date(Date.UTC(2026, 11, 1, 10, 0, 0)).toISOString(),
  sampledAt: new Date(Date.UTC(2026, 11, 1, 10, 12, 0)).toISOString(),
  disk: { path: '/dev/nvme0n1', export: 'disk' },
  desktop: { peer: 'fd3a:51c2:8e04:1b2c:3d4e:5f60:7182:2', since: new Date(Date.UTC(2026, 11, 1, 10, 3, 0)).toISOString() },
  traffic: { bytesRead: 1.2 * 1024 ** 3, bytesWritten: 96 * 1024 ** 2, inFlight: 2, errors: 0, readPerS: 14.2 * 1024 ** 2, writtenPerS: 320 * 1024 },
  links: [
    { name: 'enp0s31f6', speedMbps: 1000, mtu: 1500, carrier: true },
    { name: 'enx00e04c680001', speedMbps: 2500, mtu: 9000, carrier: true },
    { name: 'usb0', speedMbps: null, mtu: 1500, carrier: false },
  ],
  power: { onBattery: true, capacity: 37, batteries: ['BAT0'], mains: false },
  pairingCode: '482 913',
  ...over,
});
const NOW = Date.UTC(2026, 11, 1, 10, 12, 0);

test('the panel stays on top, the log scrolls beneath it, and everything fits an 80x25 console', async () => {
  const s = screen();
  for (let i = 1; i <= 30; i++) await s.write(`boot line ${i}\n`);
  const lines = formatStatus(status(), NOW, G.cols - 1);
  const panel = panelOn((b) => void s.term.write(b), G);
  panel.draw(lines);
  for (let i = 1; i <= 40; i++) await s.write(`log line ${i}\n`);
  await s.write('');
  const rows = s.rows();
  assert.deepEqual(rows.slice(0, lines.length), lines, 'the status lines, from the top row');
  assert.equal(rows[0], "stiefelsystem: 'my-laptop' serving since 12 min");
  assert.match(rows[2]!, /^desktop  fd3a:51c2:8e04:1b2c:3d4e:5f60:7182:2, for 9 min$/);
  assert.match(rows[6]!, /^power    ON BATTERY, 37 %$/);
  assert.equal(rows[PANEL_ROWS], '-'.repeat(79), 'a rule under the panel');
  // Beneath: the newest log lines, scrolled within the region; the last row is where the cursor waits.
  assert.deepEqual(rows.slice(PANEL_ROWS + 1, G.rows - 1), Array.from({ length: G.rows - PANEL_ROWS - 2 }, (_, i) => `log line ${40 - (G.rows - PANEL_ROWS - 3) + i}`));
  assert.equal(rows[G.rows - 1], '');
  for (const r of rows) assert.ok(r.length < G.cols, `within 79 columns: ${r}`);
  assert.match(rows[5]!, /^links    enp0s31f6 1 Gbit\/s, MTU 1500; enx00e04c680001 2\.5 Gbit\/s, MTU 9000; u…$/, 'a long line cut with an ellipsis');
});

test('redrawn once a second without flicker: the same status writes nothing, a change rewrites only its row', async () => {
  const s = screen();
  const first = formatStatus(status(), NOW, 79);
  await s.write(panelUpdate(undefined, first, G));
  await s.write('a log line\n');
  assert.equal(panelUpdate(first, first, G), '', 'nothing changed, nothing written');
  const later = formatStatus(status({ traffic: { ...status().traffic!, bytesRead: 1.3 * 1024 ** 3, readPerS: 2 * 1024 ** 2 }, sampledAt: new Date(NOW + 1000).toISOString() }), NOW + 1000, 79);
  const bytes = panelUpdate(first, later, G);
  assert.equal((bytes.match(/\x1b\[\d+;1H/g) ?? []).length, 1, 'one row rewritten');
  assert.doesNotMatch(bytes, /\x1b\[2J|\x1b\[\d*J/, 'never a screen clear');
  assert.match(bytes, /^\x1b7.*\x1b8$/s, 'the cursor saved and restored around it');
  await s.write(bytes);
  await s.write('another log line\n');
  const rows = s.rows();
  assert.match(rows[3]!, /^read     1\.3 GiB \(2\.0 MiB\/s\)   written 96\.0 MiB \(320\.0 KiB\/s\)$/);
  assert.equal(rows[G.rows - 3], 'a log line');
  assert.equal(rows[G.rows - 2], 'another log line', 'the log went on where it was');
  // Fewer lines (no traffic yet, no pairing code): the rows left over are blanked.
  const fewer = formatStatus(status({ traffic: null, pairingCode: null }), NOW, 79);
  await s.write(panelUpdate(later, fewer, G));
  assert.deepEqual(s.rows().slice(0, PANEL_ROWS), [...fewer, ...Array(PANEL_ROWS - fewer.length).fill('')]);
});

test('closed: the panel is cleared and the whole screen scrolls again', async () => {
  const s = screen();
  const panel = panelOn((b) => void s.term.write(b), G);
  panel.draw(formatStatus(status(), NOW, 79));
  await s.write('before\n');
  panel.close();
  panel.draw(['not drawn after close']);
  for (let i = 1; i <= 30; i++) await s.write(`after ${i}\n`);
  const rows = s.rows();
  assert.equal(rows[0], 'after 7', 'the top row scrolled too');
  assert.equal(rows[G.rows - 2], 'after 30');
  assert.ok(!rows.some((r) => r.includes('stiefelsystem:') || r.includes('not drawn')));
  assert.equal(panelClose(G).includes('\x1b[r'), true);
});

test('where it is drawn by default: a virtual terminal (tty1, or /dev/console when the kernel console is one), not a serial console', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'stf15-panel-'));
  try {
    mkdirSync(join(dir, 'class/tty/console'), { recursive: true });
    const active = (text: string) => writeFileSync(join(dir, 'class/tty/console/active'), `${text}\n`);
    active('ttyS0 tty0');
    assert.equal(await consoleIsVirtualTerminal('/dev/console', dir), true, 'the last one is /dev/console');
    active('tty0 ttyS0');
    assert.equal(await consoleIsVirtualTerminal('/dev/console', dir), false);
    assert.equal(await consoleIsVirtualTerminal('/dev/ttyS0', dir), false);
    assert.equal(await consoleIsVirtualTerminal('/dev/pts/3', dir), false);
    assert.equal(await consoleIsVirtualTerminal('/dev/tty1', dir), true);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
