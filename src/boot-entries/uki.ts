// Unified Kernel Images (BootLoaderSpec type #2, `EFI/Linux/*.efi`): a PE
// program (the systemd-stub) carrying the kernel in `.linux`, the initrd in
// `.initrd`, the command line in `.cmdline`, os-release in `.osrel` and
// `uname -r` in `.uname`. We serve the kernel and initrd bytes extracted from
// those sections. Pure: takes the decoded PE and the small sections' text.
import { machineName, sectionInFile, selectUkiSections, type PeImage, type PeSection } from './pe';
import { parseOsRelease, pickNameVersionSortKey } from './os-release';
import { parseBootCounting } from './bls';
import type { Candidate, Skipped } from './types';

/** Sections whose text we read (each small; capped by the caller). */
export const UKI_TEXT_SECTIONS = ['.osrel', '.cmdline', '.uname'] as const;
export const UKI_TEXT_SECTION_MAX = 64 * 1024;

export interface UkiInfo {
  candidate: Candidate;
  sortKey: string | null;
  /** The os-release version systemd-boot sorts by (the displayed version is `.uname`). */
  sortVersion: string | null;
  triesLeft: number;
  triesDone: number;
}

/** Which small text sections to read next, for the caller's IO. */
export function ukiTextSections(image: PeImage, fileSize: number): Map<string, PeSection> {
  const chosen = selectUkiSections(image.sections);
  const out = new Map<string, PeSection>();
  for (const name of UKI_TEXT_SECTIONS) {
    const s = chosen.get(name);
    if (s && sectionInFile(s, fileSize) && s.fileSize <= UKI_TEXT_SECTION_MAX) out.set(name, s);
  }
  return out;
}

const decodeText = (bytes: Uint8Array | undefined): string | null =>
  bytes ? Buffer.from(bytes).toString('utf8').replace(/\0+$/, '') : null;

export function ukiCandidate(
  path: string,
  image: PeImage,
  fileSize: number,
  texts: ReadonlyMap<string, Uint8Array>,
  options: { architecture?: string } = {},
): { uki?: UkiInfo; skipped?: Skipped } {
  const fileName = path.slice(path.lastIndexOf('/') + 1);
  const skip = (reason: string) => ({ skipped: { source: 'uki' as const, what: path, reason } });
  const arch = machineName(image.machine);
  const want = options.architecture ?? 'x64';
  if (arch !== want) return skip(`a PE image for ${arch}, not ${want}`);
  const chosen = selectUkiSections(image.sections);
  const linux = chosen.get('.linux');
  if (!linux) return skip('has no .linux section: not a Unified Kernel Image');
  if (!sectionInFile(linux, fileSize)) return skip('broken PE header: the .linux section lies outside the file');
  const initrd = chosen.get('.initrd');
  if (initrd && !sectionInFile(initrd, fileSize)) return skip('broken PE header: the .initrd section lies outside the file');
  const osrelText = decodeText(texts.get('.osrel'));
  if (osrelText === null) return skip('has no .osrel section (systemd-boot does not list such images either)');
  const os = parseOsRelease(osrelText);
  const picked = pickNameVersionSortKey(os);
  const uname = decodeText(texts.get('.uname'))?.trim() || null;
  const cmdlineText = decodeText(texts.get('.cmdline'));
  const counting = parseBootCounting(fileName);
  const ref = (s: PeSection) => ({ path, section: { name: s.name, offset: s.fileOffset, length: s.fileSize } });
  return {
    uki: {
      sortKey: picked.sortKey,
      sortVersion: picked.version,
      triesLeft: counting.triesLeft,
      triesDone: counting.triesDone,
      candidate: {
        id: counting.id,
        title: picked.title ?? fileName,
        version: uname ?? picked.version,
        kernel: ref(linux),
        initrds: initrd ? [ref(initrd)] : [],
        cmdline: cmdlineText === null ? '' : cmdlineText.split(/\s+/).filter(Boolean).join(' '),
        source: 'uki',
        isDefault: false,
      },
    },
  };
}
