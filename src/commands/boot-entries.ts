import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { describeErrno, isErrnoException, StiefelError, UsageError } from '../errors';
import { findBootEntries, type BootEntry, type BootEntryScan } from '../boot-entries/find';
import { consolePassphraseProvider } from '../disk/passphrase-console';
import type { PassphraseProvider } from '../disk/passphrase';

const HELP = `Usage: stiefelctl boot-entries PATH [--json] [--cmdline TEXT] [--platform efi|pc]
                                [--passphrase-file FILE]

Lists what the laptop boots: the kernel, initrds and command line of each boot
entry found on PATH, the default first. PATH is a mounted directory (a /boot
or an ESP), a partition, a whole disk or a disk image file. Partitions are
found by reading the GPT or MBR, mounted read-only (journal replay off) in a
private temporary directory and always unmounted again, also on error and
Ctrl-C; nothing is written to the disk. LVM volume groups are activated, and
LUKS containers opened (asking for the passphrase on the terminal), only when
nothing usable was found without them; both are closed again afterwards.

Layouts, in order of preference: stiefelsystem.json (an explicit override),
BootLoaderSpec loader/entries/*.conf, Unified Kernel Images EFI/Linux/*.efi,
grub.cfg, extlinux.conf/syslinux.cfg, vmlinuz-VERSION + initrd pairs.

Options:
  --json                 print a JSON array (stdout); skipped entries and the
                         reasons go to stderr, as in the table form
  --cmdline TEXT         command line for kernel pairs (which carry none)
  --platform efi|pc      how the laptop boots grub ($grub_platform), if known
  --passphrase-file FILE read the LUKS passphrase from FILE instead of asking

Exit status: 0 when at least one usable entry was found, 1 when none (stderr
then says which layouts were looked at and why each failed), 2 for usage.

Examples:
  stiefelctl boot-entries /boot
  stiefelctl boot-entries /dev/nvme0n1 --json
  stiefelctl boot-entries laptop.img
`;

/**
 * The passphrase in FILE, read at once: a file that cannot be read is the
 * user's mistake whether or not a LUKS container turns up to need it.
 */
async function fileProvider(path: string): Promise<PassphraseProvider> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new UsageError(`cannot read the passphrase file ${path}: ${isErrnoException(err) ? describeErrno(err) : String(err)}; fix --passphrase-file`, { command: 'boot-entries', cause: err });
  }
  return {
    attempts: 1,
    origin: `the passphrase in ${path}`,
    hint: 'check the file (one final newline is ignored), or leave out --passphrase-file to be asked',
    ask: async () => text,
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export function formatEntriesTable(entries: readonly BootEntry[]): string {
  const rows = [['', 'SOURCE', 'VERSION', 'PARTITION', 'KERNEL', 'INITRDS', 'CMDLINE', 'TITLE']];
  for (const e of entries) {
    rows.push([e.default ? '*' : '', e.source, e.version ?? '-', e.partition, e.kernel, e.initrds.join(',') || '-', e.cmdline ?? '(from config)', e.title]);
  }
  return `${table(rows)}\n`;
}

export function entriesJson(entries: readonly BootEntry[]): unknown[] {
  return entries.map((e) => ({
    id: e.id,
    title: e.title,
    version: e.version,
    kernel: e.kernel,
    initrds: e.initrds,
    cmdline: e.cmdline,
    source: e.source,
    partition: e.partition,
    default: e.default,
  }));
}

function reportProblems(scan: BootEntryScan, write: (line: string) => void): void {
  for (const v of scan.volumes) if (v.problem) write(`not searched: ${v.name} (${v.what}): ${v.problem}`);
  for (const s of scan.skipped) write(`skipped [${s.source}] ${s.partition}: ${s.what}: ${s.reason}`);
}

export const bootEntriesCommand: Command = {
  name: 'boot-entries',
  summary: 'list the boot entries found on a /boot, partition, disk or image',
  help: HELP,
  async run(argv, ctx) {
    const { values, positionals } = parseCommandArgs(
      'boot-entries',
      argv,
      {
        json: { type: 'boolean' },
        cmdline: { type: 'string' },
        platform: { type: 'string' },
        'passphrase-file': { type: 'string' },
      },
      { min: 1, max: 1, names: 'PATH (a mounted /boot or ESP, a partition, a disk or an image)' },
    );
    const platform = values.platform;
    if (platform !== undefined && platform !== 'efi' && platform !== 'pc') throw new UsageError(`--platform must be efi or pc, not '${platform}'`, { command: 'boot-entries' });
    const source = resolve(ctx.cwd, positionals[0]!);
    const log = ctx.log.child('boot-entries');
    const scan = await findBootEntries(source, {
      log,
      signal: ctx.signal,
      passphrase: values['passphrase-file'] ? await fileProvider(resolve(ctx.cwd, values['passphrase-file'])) : consolePassphraseProvider(),
      ...(values.cmdline !== undefined ? { cmdline: values.cmdline } : {}),
      ...(platform ? { platform } : {}),
    });
    try {
      for (const n of scan.notes) log.debug(n);
      const lines: string[] = [];
      reportProblems(scan, (l) => lines.push(l));
      if (scan.entries.length === 0) {
        for (const l of lines) ctx.log.info(l);
        ctx.log.info(`looked for boot entries on ${positionals[0]}:`);
        for (const l of scan.layouts) ctx.log.info(`  ${l.source}: ${l.summary}`);
        throw new StiefelError('E_NO_BOOT_ENTRY', `no usable boot entry on ${positionals[0]} (the layouts looked at and why each failed are listed above)`);
      }
      if (values.json) ctx.stdout(`${JSON.stringify(entriesJson(scan.entries), null, 2)}\n`);
      else ctx.stdout(formatEntriesTable(scan.entries));
      for (const l of lines) ctx.log.info(l);
    } finally {
      await scan.close();
    }
    return 0;
  },
};
