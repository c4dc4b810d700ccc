// Progress of a build: the builder reports steps, a display draws them on
// stderr, redrawing one line on a terminal and writing plain lines otherwise.

export type BuildPhase = 'kernel' | 'modules' | 'programs' | 'depmod' | 'tree' | 'strip' | 'read' | 'pack' | 'write';

export interface BuildProgress {
  phase: BuildPhase;
  /** What is happening, e.g. "412 modules, depmod". */
  message: string;
  /** For phases with a measurable amount: done and total (bytes or items). */
  done?: number;
  total?: number;
}

export type ProgressCallback = (p: BuildProgress) => void;

const MiB = 1024 * 1024;

function amount(p: BuildProgress): string {
  if (p.done === undefined) return '';
  if (p.total !== undefined && p.total > 0) {
    const pct = Math.min(100, Math.floor((p.done / p.total) * 100));
    return ` ${pct}%`;
  }
  return ` ${(p.done / MiB).toFixed(1)} MiB`;
}

export interface ProgressDisplay {
  update: ProgressCallback;
}

/** Moves the cursor to the line above and clears it: the next line replaces the last one drawn. */
export const REDRAW_PREVIOUS_LINE = '\x1b[1A\x1b[2K';

/**
 * On a terminal: one line rewritten in place (through whole-line writes, as a
 * Logger gives them), at most every 100 ms per phase. Otherwise: one plain
 * line per phase, without per-byte noise in logs.
 */
export function createProgressDisplay(options: { line: (text: string) => void; isTTY: boolean; now?: () => number }): ProgressDisplay {
  const now = options.now ?? (() => Date.now());
  let lastPhase: BuildPhase | undefined;
  let lastDraw = 0;
  let drawn = false;
  return {
    update(p) {
      if (options.isTTY) {
        const t = now();
        if (p.phase === lastPhase && t - lastDraw < 100) return;
        lastPhase = p.phase;
        lastDraw = t;
        options.line(`${drawn ? REDRAW_PREVIOUS_LINE : ''}${p.phase}: ${p.message}${amount(p)}`);
        drawn = true;
        return;
      }
      if (p.phase === lastPhase) return;
      lastPhase = p.phase;
      options.line(`${p.phase}: ${p.message}`);
    },
  };
}
