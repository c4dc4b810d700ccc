// The explicit override: `stiefelsystem.json` in the boot partition's root.
//
//   {
//     "kernel": "vmlinuz-6.1.0-18-amd64",            required
//     "initrd": "initrd.img-6.1.0-18-amd64",         or "initrds": [..] (in order)
//     "cmdline": "root=UUID=... ro quiet",           optional (null: from the config)
//     "title": "Debian, my way"                      optional
//   }
//
// Paths are inside the partition holding the file ('/' optional). Pure.
import { emptyResult, normalizeBootPath, type ParseResult } from './types';

export const OVERRIDE_FILE = 'stiefelsystem.json';

const KNOWN_KEYS = new Set(['kernel', 'initrd', 'initrds', 'cmdline', 'title', 'version']);

export function parseOverride(text: string, what = `/${OVERRIDE_FILE}`): ParseResult {
  const result = emptyResult();
  const skip = (reason: string): ParseResult => {
    result.skipped.push({ source: 'override', what, reason });
    return result;
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return skip(`not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return skip('must be a JSON object with "kernel", "initrd" and "cmdline"');
  const o = doc as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !KNOWN_KEYS.has(k));
  if (unknown.length) result.notes.push(`${what}: ignored unknown keys ${unknown.join(', ')}`);
  if (typeof o.kernel !== 'string' || !o.kernel.trim()) return skip('"kernel" must name the kernel file');
  if (o.initrd !== undefined && o.initrds !== undefined) return skip('give either "initrd" or "initrds", not both');
  const initrdValue = o.initrds ?? o.initrd;
  let initrds: string[];
  if (initrdValue === undefined || initrdValue === null) initrds = [];
  else if (typeof initrdValue === 'string') initrds = [initrdValue];
  else if (Array.isArray(initrdValue) && initrdValue.every((v): v is string => typeof v === 'string')) initrds = initrdValue;
  else return skip('"initrd" must be a file name or a list of file names');
  if (initrds.some((p) => !p.trim())) return skip('an initrd name is empty');
  if (o.cmdline !== undefined && o.cmdline !== null && typeof o.cmdline !== 'string') return skip('"cmdline" must be a string');
  if (o.title !== undefined && typeof o.title !== 'string') return skip('"title" must be a string');
  if (o.version !== undefined && o.version !== null && typeof o.version !== 'string') return skip('"version" must be a string');
  const kernel = normalizeBootPath(o.kernel.trim());
  result.candidates.push({
    id: OVERRIDE_FILE,
    title: (o.title as string | undefined) ?? `stiefelsystem override (${kernel})`,
    version: (o.version as string | null | undefined) ?? null,
    kernel: { path: kernel },
    initrds: initrds.map((p) => ({ path: normalizeBootPath(p.trim()) })),
    cmdline: typeof o.cmdline === 'string' ? o.cmdline.trim() : null,
    source: 'override',
    isDefault: true,
  });
  return result;
}
