// The dynamic loader's search configuration (ld.so(8), ldconfig(8)):
// /etc/ld.so.conf lists directories, one per line, `#` comments, and
// `include GLOB` lines naming more files. Pure parsing plus a small glob
// matcher; the caller reads the files.

export interface LdSoConf {
  dirs: string[];
  includes: string[];
}

export function parseLdSoConf(text: string): LdSoConf {
  const out: LdSoConf = { dirs: [], includes: [] };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') continue;
    const include = /^include\s+(.+)$/.exec(line);
    if (include) out.includes.push(...include[1]!.split(/\s+/));
    else if (line.startsWith('hwcap ')) continue; // obsolete, ignored by glibc too
    else out.dirs.push(...line.split(/[\s:,=]+/).filter((d) => d.startsWith('/')));
  }
  return out;
}

/** Whether `name` matches a shell glob made of literal characters, `*` and `?` (no `/`). */
export function matchGlob(pattern: string, name: string): boolean {
  const re = new RegExp(
    `^${pattern.replace(/[.+^${}()|\\[\]]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`,
  );
  return re.test(name);
}

/** The directories glibc searches by default after the cache, by ELF class. */
export function defaultLibraryDirs(is64: boolean): string[] {
  return is64 ? ['/lib64', '/usr/lib64', '/lib', '/usr/lib'] : ['/lib', '/usr/lib', '/lib32', '/usr/lib32'];
}

/**
 * Expands `$ORIGIN` (the directory of the object), `$LIB` and `$PLATFORM`
 * in a DT_RPATH/DT_RUNPATH entry (ld.so(8), "Dynamic string tokens").
 */
export function expandDynamicTokens(entry: string, origin: string, is64: boolean): string {
  return entry
    .replace(/\$(ORIGIN|\{ORIGIN\})/g, origin)
    .replace(/\$(LIB|\{LIB\})/g, is64 ? 'lib64' : 'lib')
    .replace(/\$(PLATFORM|\{PLATFORM\})/g, is64 ? 'x86_64' : 'i686');
}
