// SYSLINUX/EXTLINUX configuration (syslinux.cfg, extlinux.conf; Alpine's
// /boot/extlinux.conf). Keywords are case-insensitive:
//   DEFAULT label        the default label (or a UI module such as menu.c32,
//                        in which case MENU DEFAULT or the first label wins)
//   LABEL name           starts an entry
//   LINUX / KERNEL file  the kernel (KERNEL with .c32/.bs/.0/... is not Linux)
//   INITRD a,b           initrds, comma-separated, in order
//   APPEND args          the command line (`APPEND -`: none); initrd= inside
//                        it also names initrds; a global APPEND applies to
//                        labels without their own
//   MENU LABEL text      the title; MENU DEFAULT marks the default
//   INCLUDE file         reads another file in place
// Relative paths are relative to the directory of the config file. Pure:
// INCLUDE goes through `readFile`.
import { emptyResult, normalizeBootPath, type ParseResult } from './types';

export interface SyslinuxContext {
  /** The config file's path inside the partition, e.g. "/boot/extlinux.conf". */
  path: string;
  readFile?: (path: string) => string | undefined;
}

interface Label {
  name: string;
  title: string | null;
  kernel: string | null;
  kernelKeyword: string;
  initrds: string[];
  append: string | null;
  menuDefault: boolean;
  localboot: boolean;
}

const NON_LINUX_EXT = /\.(c32|cbt|bs|bss|0|com|cbt|img)$/i;

export function parseSyslinux(text: string, ctx: SyslinuxContext): ParseResult {
  const result = emptyResult();
  const dir = ctx.path.slice(0, ctx.path.lastIndexOf('/')) || '/';
  const labels: Label[] = [];
  let globalAppend: string | null = null;
  let defaultName: string | null = null;
  let current: Label | null = null;
  let includes = 0;
  const visit = (src: string, depth: number): void => {
    if (src.includes('\0')) {
      result.skipped.push({ source: 'syslinux', what: ctx.path, reason: 'not a text file' });
      return;
    }
    let inText = false;
    for (const raw of src.split(/\r?\n/)) {
      const line = raw.trim();
      if (inText) {
        if (/^endtext$/i.test(line)) inText = false;
        continue;
      }
      if (!line || line.startsWith('#')) continue;
      const m = /^(\S+)\s*(.*)$/.exec(line)!;
      const key = m[1]!.toUpperCase();
      const value = m[2]!.trim();
      if (key === 'TEXT' && /^help$/i.test(value)) {
        inText = true;
        continue;
      }
      if (key === 'LABEL') {
        current = { name: value, title: null, kernel: null, kernelKeyword: 'LINUX', initrds: [], append: null, menuDefault: false, localboot: false };
        labels.push(current);
        continue;
      }
      if (key === 'DEFAULT') {
        defaultName = value;
        continue;
      }
      if (key === 'INCLUDE' || (key === 'MENU' && /^include\s/i.test(value))) {
        const file = key === 'INCLUDE' ? value.split(/\s+/)[0]! : value.split(/\s+/)[1]!;
        const text2 = depth < 8 && includes++ < 64 ? ctx.readFile?.(normalizeBootPath(file, dir)) : undefined;
        if (text2 === undefined) result.notes.push(`${ctx.path}: INCLUDE ${file} could not be read`);
        else visit(text2, depth + 1);
        continue;
      }
      if (key === 'MENU') {
        const sub = /^(\S+)\s*(.*)$/.exec(value);
        const what = sub?.[1]?.toUpperCase();
        // '^' marks the menu's hotkey letter (syslinux menu.c32); it is not part of the title.
        if (current && what === 'LABEL') current.title = sub![2]!.trim().replace('^', '');
        else if (current && what === 'DEFAULT') current.menuDefault = true;
        continue;
      }
      const label: Label | null = current;
      if (key === 'APPEND') {
        if (label) label.append = value;
        else globalAppend = value;
        continue;
      }
      if (!label) continue;
      if (key === 'LINUX' || key === 'KERNEL') {
        label.kernel = value.split(/\s+/)[0] ?? null;
        label.kernelKeyword = key;
      } else if (key === 'INITRD') label.initrds.push(...value.split(',').map((s) => s.trim()).filter(Boolean));
      else if (key === 'LOCALBOOT') label.localboot = true;
    }
  };
  visit(text, 0);

  const uiDefault = defaultName !== null && /\.c32$/i.test(defaultName);
  let defaultLabel = labels.find((l) => !uiDefault && defaultName !== null && l.name === defaultName) ?? null;
  if (!defaultLabel) defaultLabel = labels.find((l) => l.menuDefault) ?? null;
  if (defaultName && !uiDefault && !labels.some((l) => l.name === defaultName)) {
    result.notes.push(`${ctx.path}: DEFAULT ${defaultName} names no LABEL; ${defaultLabel ? `MENU DEFAULT ${defaultLabel.name}` : 'the first label'} is used`);
  }
  for (const l of labels) {
    const what = `${ctx.path}: LABEL ${l.name}`;
    if (l.localboot) {
      result.skipped.push({ source: 'syslinux', what, reason: 'boots the local disk (LOCALBOOT), not a kernel' });
      continue;
    }
    if (!l.kernel) {
      result.skipped.push({ source: 'syslinux', what, reason: 'has no LINUX or KERNEL line' });
      continue;
    }
    if (l.kernelKeyword === 'KERNEL' && NON_LINUX_EXT.test(l.kernel)) {
      result.skipped.push({ source: 'syslinux', what, reason: `KERNEL ${l.kernel} is a syslinux module or boot sector, not a Linux kernel` });
      continue;
    }
    let append = l.append ?? globalAppend ?? '';
    if (append.trim() === '-') append = '';
    const args = append.split(/\s+/).filter(Boolean);
    const initrds = [...l.initrds];
    const rest: string[] = [];
    for (const a of args) {
      if (a.startsWith('initrd=')) initrds.push(...a.slice(7).split(',').filter(Boolean));
      else rest.push(a);
    }
    result.candidates.push({
      id: l.name,
      title: l.title ?? l.name,
      version: /vmlinu[xz]-(.+)$/.exec(l.kernel)?.[1] ?? null,
      kernel: { path: normalizeBootPath(l.kernel, dir) },
      initrds: initrds.map((p) => ({ path: normalizeBootPath(p, dir) })),
      cmdline: rest.join(' '),
      source: 'syslinux',
      isDefault: false,
    });
  }
  const def = result.candidates.find((c) => c.id === defaultLabel?.name) ?? result.candidates[0];
  if (def) def.isDefault = true;
  return result;
}
