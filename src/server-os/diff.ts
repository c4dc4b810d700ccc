// A unified diff of two small texts (config files, scripts), for showing
// what `setup-server-os` would change. Pure. Longest-common-subsequence on
// lines; fine for the few hundred lines these files have.

function lines(text: string | null): string[] {
  if (text === null || text === '') return [];
  const l = text.split('\n');
  if (l.at(-1) === '') l.pop();
  return l;
}

/** diff's range: `start,count`, the count left out when it is 1, start 0-based when empty. */
function range(start: number, count: number): string {
  if (count === 0) return `${start},0`;
  return count === 1 ? `${start + 1}` : `${start + 1},${count}`;
}

type Op = { kind: ' ' | '-' | '+'; text: string; a: number; b: number };

function ops(a: string[], b: string[]): Op[] {
  const n = a.length;
  const m = b.length;
  // lcs[i][j]: length of the LCS of a[i..] and b[j..].
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) out.push({ kind: ' ', text: a[i++]!, a: i, b: ++j });
    // Removals before additions, as diff(1) shows them.
    else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) out.push({ kind: '-', text: a[i++]!, a: i, b: j });
    else out.push({ kind: '+', text: b[j++]!, a: i, b: j });
  }
  return out;
}

/**
 * `diff -u` style text; empty when the texts are equal. A null text is an
 * absent file (shown as /dev/null).
 */
export function unifiedDiff(path: string, before: string | null, after: string | null, context = 3): string {
  if (before === after) return '';
  const a = lines(before);
  const b = lines(after);
  const all = ops(a, b);
  const changed = all.map((o) => o.kind !== ' ');
  const out = [`--- ${before === null ? '/dev/null' : `a${path}`}`, `+++ ${after === null ? '/dev/null' : `b${path}`}`];
  let k = 0;
  while (k < all.length) {
    if (!changed[k]) {
      k++;
      continue;
    }
    // A hunk: from `context` lines before this change to `context` lines after
    // the last change that is at most 2*context lines from the previous one.
    const start = Math.max(0, k - context);
    let end = k;
    for (let x = k; x < all.length && x <= end + 2 * context; x++) if (changed[x]) end = x;
    const stop = Math.min(all.length, end + context + 1);
    const hunk = all.slice(start, stop);
    const aStart = hunk[0]!.kind === '+' ? hunk[0]!.a : hunk[0]!.a - 1;
    const bStart = hunk[0]!.kind === '-' ? hunk[0]!.b : hunk[0]!.b - 1;
    const aLen = hunk.filter((o) => o.kind !== '+').length;
    const bLen = hunk.filter((o) => o.kind !== '-').length;
    out.push(`@@ -${range(aStart, aLen)} +${range(bStart, bLen)} @@`);
    for (const o of hunk) out.push(`${o.kind}${o.text}`);
    k = stop;
  }
  const unterminated = (t: string | null): boolean => t !== null && t !== '' && !t.endsWith('\n');
  if (unterminated(before) || unterminated(after)) out.push('\\ No newline at end of file');
  return `${out.join('\n')}\n`;
}
