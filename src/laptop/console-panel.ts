// The status panel at the top of the laptop's console while it serves: the
// lines of formatStatus, redrawn once a second in place, with the log
// scrolling beneath them. The terminal does the work (VT100's scroll region,
// DECSTBM, which the Linux console and serial terminals know): the panel's
// rows are outside the region, so log lines and kernel messages scroll only
// below it, and a redraw rewrites just the rows that changed (cursor saved
// and restored around it), so nothing flickers.
import { openSync } from 'node:fs';
import { promises as fs } from 'node:fs';
import { WriteStream } from 'node:tty';

/** Rows the panel keeps for itself (formatStatus gives at most 8), then a rule. */
export const PANEL_ROWS = 9;

export interface Geometry {
  rows: number;
  cols: number;
}

const ESC = '\x1b';
const at = (row: number): string => `${ESC}[${row};1H`;
/** One column short of the edge: a character in the last column leaves the cursor waiting to wrap, and erasing from there would take it away. */
const fit = (text: string, cols: number): string => (text.length < cols ? text : `${text.slice(0, cols - 2)}…`);

/** The panel's rows for `lines`: padded to PANEL_ROWS, then the rule. */
function rowsOf(lines: readonly string[], g: Geometry): string[] {
  const rows = Array.from({ length: PANEL_ROWS }, (_, i) => fit(lines[i] ?? '', g.cols));
  rows.push('-'.repeat(g.cols - 1));
  return rows;
}

/**
 * Pure: the bytes that bring the screen from the panel showing `before` to
 * it showing `after`. The first draw (before undefined) scrolls the screen
 * up by the panel's height, sets the scroll region below the panel and
 * leaves the cursor at the region's bottom, where the log goes on; later
 * ones rewrite the changed
 * rows only (nothing when none changed).
 */
export function panelUpdate(before: readonly string[] | undefined, after: readonly string[], g: Geometry): string {
  const next = rowsOf(after, g);
  if (before === undefined) {
    const body = next.map((r, i) => `${at(i + 1)}${r}${ESC}[K`).join('');
    // What the console shows moves up out of the panel's way (the newest lines stay), then the region is set.
    return `${at(g.rows)}${'\n'.repeat(next.length)}${ESC}[${next.length + 1};${g.rows}r${body}${at(g.rows)}`;
  }
  const prev = rowsOf(before, g);
  const changed = next.map((r, i) => (r === prev[i] ? '' : `${at(i + 1)}${r}${ESC}[K`)).join('');
  return changed ? `${ESC}7${changed}${ESC}8` : '';
}

/** Pure: the scroll region back to the whole screen, the panel's rows cleared, the cursor where it was. */
export function panelClose(g: Geometry): string {
  const clear = Array.from({ length: PANEL_ROWS + 1 }, (_, i) => `${at(i + 1)}${ESC}[K`).join('');
  return `${ESC}7${ESC}[r${clear}${ESC}8`;
}

/** Smaller than this, the panel would leave the log no room: it stays off. */
const MIN_ROWS = PANEL_ROWS + 6;
const MIN_COLS = 40;

export interface ConsolePanel {
  draw(lines: readonly string[]): void;
  close(): void;
  readonly geometry: Geometry;
}

/** A panel drawn through `write` on a screen of `g` (for a stream of one's own, or a test). */
export function panelOn(write: (bytes: string) => void, g: Geometry): ConsolePanel {
  let shown: readonly string[] | undefined;
  let closed = false;
  return {
    geometry: g,
    draw(lines) {
      if (closed) return;
      const bytes = panelUpdate(shown, lines, g);
      shown = lines;
      if (bytes) write(bytes);
    },
    close() {
      if (closed || shown === undefined) return void (closed = true);
      closed = true;
      write(panelClose(g));
    },
  };
}

/**
 * Where the panel belongs: the laptop's console when it is a virtual
 * terminal (tty1...; /dev/console counts when the kernel's console is one,
 * /sys/class/tty/console/active names it last). A serial console stays a
 * plain log: a terminal on the far end may not be a VT100, and a capture
 * of it is read as text.
 */
export async function consoleIsVirtualTerminal(device: string, sys = '/sys'): Promise<boolean> {
  const name = (await fs.realpath(device).catch(() => device)).replace(/^\/dev\//, '');
  if (/^tty\d+$/.test(name)) return true;
  if (name !== 'console') return false;
  const active = (await fs.readFile(`${sys}/class/tty/console/active`, 'utf8').catch(() => '')).trim().split(/\s+/);
  return /^tty\d+$/.test(active.at(-1) ?? '');
}

/**
 * A panel on the terminal `device` (the laptop's console), written through
 * a tty stream of its own, so its writes are synchronous and in order with
 * nothing torn; undefined when the terminal is too small or not one.
 */
export function openConsolePanel(device: string): ConsolePanel | undefined {
  let stream: WriteStream;
  try {
    stream = new WriteStream(openSync(device, 'w'));
  } catch {
    return undefined;
  }
  stream.on('error', () => undefined);
  const [cols, rows] = stream.getWindowSize?.() ?? [0, 0];
  // The Linux console reports its size; 0 (a serial line nobody set) means 80x25.
  const g = { rows: rows || 25, cols: cols || 80 };
  if (g.rows < MIN_ROWS || g.cols < MIN_COLS) {
    stream.destroy();
    return undefined;
  }
  const panel = panelOn((bytes) => stream.write(bytes), g);
  return {
    geometry: g,
    draw: (lines) => panel.draw(lines),
    close() {
      panel.close();
      stream.end();
    },
  };
}
