// Version comparison as the UAPI Version Format Specification and systemd's
// strverscmp_improved() define it; used to sort BootLoaderSpec entries and
// vmlinuz-VERSION files. Segments are runs of digits or of ASCII letters,
// prefixed by one of:
//   '~'  pre-release: older than anything else at that position (123~rc1 < 123)
//   '-'  version/release separator (123-1 < 123.1)
//   '^'  patched release (123-1 < 123^post1 < 123.1)
//   '.'  point release
// A segment without prefix is the newest; numeric segments are newer than
// alphabetic ones; every other character only separates segments.
//
//   (older) 122.1 < 123~rc1-1 < 123 < 123-a < 123-a.1 < 123-1 < 123-1.1
//           < 123^post1 < 123.a-1 < 123.1-1 < 123a-1 < 124-1 (newer)

const isDigit = (c: string): boolean => c >= '0' && c <= '9';
const isAlpha = (c: string): boolean => (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
const isVersionChar = (c: string): boolean => isDigit(c) || isAlpha(c) || c === '~' || c === '-' || c === '^' || c === '.';

const sign = (n: number): -1 | 0 | 1 => (n < 0 ? -1 : n > 0 ? 1 : 0);
const cmp = (a: number | boolean, b: number | boolean): -1 | 0 | 1 => sign(Number(a) - Number(b));

/** Bytewise strcmp on the remaining strings (they are compared as C strings). */
function strcmp(a: string, b: string): -1 | 0 | 1 {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Compares two version strings: negative when `a` is older than `b`, zero
 * when equivalent, positive when newer. Never throws; an empty or missing
 * version is older than any other.
 */
export function compareVersions(a: string | null | undefined, b: string | null | undefined): -1 | 0 | 1 {
  if (!a || !b) return cmp(Boolean(a), Boolean(b));
  let i = 0;
  let j = 0;
  const at = (s: string, k: number): string => (k < s.length ? s[k]! : '');
  for (;;) {
    while (i < a.length && !isVersionChar(a[i]!)) i++;
    while (j < b.length && !isVersionChar(b[j]!)) j++;

    if (at(a, i) === '~' || at(b, j) === '~') {
      const r = cmp(at(a, i) !== '~', at(b, j) !== '~');
      if (r !== 0) return r;
      i++;
      j++;
    }
    // One string ended: the one with more segments is newer (after '~').
    if (i >= a.length || j >= b.length) return strcmp(a.slice(i), b.slice(j));

    for (const sep of ['-', '^', '.']) {
      if (at(a, i) === sep || at(b, j) === sep) {
        const r = cmp(at(a, i) !== sep, at(b, j) !== sep);
        if (r !== 0) return r;
        i++;
        j++;
      }
    }

    if (isDigit(at(a, i)) || isDigit(at(b, j))) {
      while (at(a, i) === '0') i++;
      while (at(b, j) === '0') j++;
      let ii = i;
      let jj = j;
      while (isDigit(at(a, ii))) ii++;
      while (isDigit(at(b, jj))) jj++;
      // Longer digit run (without leading zeros) is the larger number.
      const r = cmp(ii - i, jj - j);
      if (r !== 0) return r;
      const s = strcmp(a.slice(i, ii), b.slice(j, jj));
      if (s !== 0) return s;
      i = ii;
      j = jj;
    } else {
      let ii = i;
      let jj = j;
      while (isAlpha(at(a, ii))) ii++;
      while (isAlpha(at(b, jj))) jj++;
      const n = Math.min(ii - i, jj - j);
      const s = strcmp(a.slice(i, i + n), b.slice(j, j + n));
      if (s !== 0) return s;
      const r = cmp(ii - i, jj - j);
      if (r !== 0) return r;
      i = ii;
      j = jj;
    }
  }
}
