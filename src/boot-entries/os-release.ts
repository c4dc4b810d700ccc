// os-release(5) as embedded in a UKI's .osrel section: KEY=VALUE lines,
// values optionally quoted with shell-like escapes. Pure.

export function parseOsRelease(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) continue;
    let value = line.slice(eq + 1).trim();
    const q = value[0];
    if ((q === '"' || q === "'") && value.length >= 2 && value.endsWith(q)) {
      value = value.slice(1, -1);
      if (q === '"') value = value.replace(/\\([\\$"`])/g, '$1');
    }
    out.set(key, value);
  }
  return out;
}

/**
 * Title, version and sort key for a UKI from its os-release, preferring the
 * precise over the vague as systemd-boot does (bootspec_pick_name_version_sort_key).
 */
export function pickNameVersionSortKey(os: Map<string, string>): { title: string | null; version: string | null; sortKey: string | null } {
  const get = (k: string): string | null => os.get(k) || null;
  const title = get('PRETTY_NAME') ?? get('IMAGE_ID') ?? get('NAME') ?? get('ID');
  const version = get('IMAGE_VERSION') ?? get('VERSION') ?? get('VERSION_ID') ?? get('BUILD_ID');
  const sortKey = get('IMAGE_ID') ?? get('ID');
  return { title, version, sortKey };
}
