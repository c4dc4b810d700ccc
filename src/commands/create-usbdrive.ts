import { readFile } from 'node:fs/promises';
import { release as osRelease } from 'node:os';
import { resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { confirmOnTerminal } from '../cli/confirm';
import { configPath, DEFAULT_CONFIG_PATH, loadConfig } from '../config';
import { readSecretFile } from '../crypto/secret-file';
import { systemRunner } from '../disk/runner';
import { UsageError } from '../errors';
import { programSearchDirs } from '../image/programs';
import { createProgressDisplay } from '../image/progress';
import { ProgressReporter } from '../progress';
import { createUsbDrive } from '../usbdrive/create';
import { parseSize } from '../usbdrive/layout';
import type { WritePhase } from '../usbdrive/writer';

declare const STIEFEL_BUNDLED_ASSETS: Record<string, string> | undefined;

const HELP = `Usage: stiefelctl create-usbdrive TARGET [--config PATH] [--image DIR] [--size SIZE]
                                  [--kernel PATH] [--yes] [--dry-run]

Writes the desktop's boot stick: one layout that boots on UEFI PCs (systemd-boot
at EFI/BOOT/BOOTX64.EFI, no firmware setting needed) and on BIOS PCs (syslinux
through the GPT's protective MBR), with a menu (3 s): find the laptop and boot
its OS (default), the same with debug messages, a rescue shell. The menu and
the kernel's messages show on the screen and on the first serial port.

TARGET is a whole disk (/dev/sdX, /dev/disk/by-id/usb-...; everything on it is
lost) or an image file to create (write it to a stick later with dd or any
image writer). The stick carries stiefelOS with the config and the shared
secret inside: it is a key to the laptop's disk.

Options:
  --config PATH   config file (default $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH});
                  client.cmdline_append adds words to the kernel command line
  --image DIR     use the stiefelOS in DIR (vmlinuz, initrd.img from
                  'stiefelctl build-image --config ... --secret ...') instead
                  of building it now; it must carry this config's secret
  --kernel PATH   the kernel to build stiefelOS from (default: the running one)
  --size SIZE     the stick's size, e.g. 256M or 2G (default: what the files
                  need plus a margin); on a disk, the part of it that is used
  --yes           do not ask before writing
  --dry-run       show the layout and what would be written; write nothing

Writing a disk needs root. A disk that holds a mounted file system, swap, the
running root or an open LUKS/LVM/RAID member is refused. The old signatures
are wiped first and the partition table written last, after the rest was
read back and compared: an interrupted run leaves a stick that boots nowhere,
never one that looks bootable but is not.

Examples:
  sudo stiefelctl create-usbdrive /dev/sdb
  sudo stiefelctl create-usbdrive --dry-run /dev/disk/by-id/usb-SanDisk_Cruzer_Blade_0123-0:0
  sudo stiefelctl create-usbdrive stiefel-stick.img && sudo dd if=stiefel-stick.img of=/dev/sdb bs=4M conv=fsync
  sudo stiefelctl create-usbdrive --image /var/lib/stiefelsystem/image --size 1G stick.img
`;

/** Short phases get one line; the long ones a progress bar (plain lines when not on a terminal). */
const PHASE_LINES: Partial<Record<WritePhase, string>> = {
  wiping: 'wiping the old partition table and signatures at both ends',
  'partition table': 'writing the partition table, last: from here on the stick boots',
};

/** The bundle this code runs from, when it runs from dist/stiefelctl.js (build-image carries it into stiefelOS). */
function runningBundle(): string | undefined {
  return typeof STIEFEL_BUNDLED_ASSETS !== 'undefined' ? __filename : undefined;
}

export const createUsbdriveCommand: Command = {
  name: 'create-usbdrive',
  summary: "write the desktop's boot stick (UEFI and BIOS) to a disk or an image file",
  help: HELP,
  async run(argv, ctx) {
    const { values, positionals } = parseCommandArgs(
      'create-usbdrive',
      argv,
      {
        config: { type: 'string' },
        image: { type: 'string' },
        size: { type: 'string' },
        kernel: { type: 'string' },
        yes: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
      },
      { min: 1, max: 1, names: 'TARGET (a whole disk such as /dev/sdb, or an image file name)' },
    );
    const usage = (m: string): UsageError => new UsageError(m, { command: 'create-usbdrive' });
    if (values.image !== undefined && values.kernel !== undefined) throw usage('--kernel builds stiefelOS, --image uses a built one: give one of them');
    let sizeBytes: number | undefined;
    if (values.size !== undefined) {
      sizeBytes = parseSize(values.size) ?? undefined;
      if (sizeBytes === undefined) throw usage(`--size must be a size such as 256M or 2G, not '${values.size}'`);
    }
    const abs = (p: string): string => resolve(ctx.cwd, p);
    const bundle = runningBundle();
    if (values.image === undefined && bundle === undefined) {
      throw usage('not running from the bundled stiefelctl.js, which stiefelOS carries: run dist/stiefelctl.js (npm run build), or pass --image DIR');
    }
    const file = configPath(values.config, ctx.env, ctx.cwd);
    const searchDirs = programSearchDirs(ctx.env.PATH);
    const display = createProgressDisplay({ line: (t) => ctx.log.info(t), isTTY: ctx.isTTY });
    let reporter: { phase: WritePhase; r: ProgressReporter | undefined } | undefined;
    const result = await createUsbDrive(
      {
        target: abs(positionals[0]!),
        loadConfig: async () => {
          const config = await loadConfig(file);
          const text = await readFile(file, 'utf8');
          return { config, text, file, secret: await readSecretFile(config.secret) };
        },
        imageDir: values.image === undefined ? undefined : abs(values.image),
        build:
          values.image === undefined
            ? { kernel: values.kernel === undefined ? undefined : abs(values.kernel), runningRelease: osRelease(), node: process.execPath, bundle: bundle!, searchDirs }
            : undefined,
        sizeBytes,
        yes: values.yes ?? false,
        dryRun: values['dry-run'] ?? false,
        isRoot: process.getuid?.() === 0,
        searchDirs,
      },
      {
        log: ctx.log,
        signal: ctx.signal,
        runner: systemRunner,
        out: ctx.stdout,
        confirm: (q) => confirmOnTerminal(q, ctx.signal),
        buildProgress: display.update,
        writeProgress: (p) => {
          if (reporter?.phase === p.phase) return reporter.r?.update(p.done, p.total);
          const line = PHASE_LINES[p.phase];
          if (line !== undefined) ctx.log.info(line);
          reporter = { phase: p.phase, r: line === undefined ? new ProgressReporter({ write: (l) => ctx.log.info(l), tty: ctx.isTTY, label: p.phase }) : undefined };
          reporter.r?.update(p.done, p.total);
        },
      },
    );
    return result.written || values['dry-run'] ? 0 : 1;
  },
};
