import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { confirmOnTerminal } from '../cli/confirm';
import { systemRunner } from '../disk/runner';
import { StiefelError, UsageError } from '../errors';
import { INITRAMFS_FAMILIES, type InitramfsFamily } from '../server-os/family';
import { unifiedDiff } from '../server-os/diff';
import { applyServerOs, planServerOs, regenerateCommand } from '../server-os/setup';

const HELP = `Usage: stiefelctl setup-server-os [--root DIR] [--dry-run] [--yes] [--uninstall]
                                  [--family F] [--cmdline TEXT]

Installs into the laptop OS what its own initramfs needs to boot from the
laptop's disk over the network on the desktop, then regenerates the initramfs
with the distribution's own tool:
  initramfs-tools (Debian, Ubuntu)   hook + local-top script
  dracut (Fedora, RHEL, openSUSE...) module 90stiefelsystem
  mkinitcpio (Arch)                  install + runtime hook, added to HOOKS
plus one shared attach script (/usr/lib/stiefelsystem/stiefel-attach), rules
that keep NetworkManager and systemd-networkd off the link, and a record in
/boot/stiefelsystem-os.json of the family and the command line for the server.
The initramfs does nothing different unless the command line carries
stiefel.mac= (set by 'stiefelctl client').

Every change is shown as a diff and asked for. Running it again changes
nothing; --uninstall removes every trace.

Options:
  --root DIR       the laptop OS's root directory (default /); for another
                   root the regeneration runs in a chroot
  --dry-run        show the changes and change nothing
  --yes            do not ask
  --uninstall      remove everything this command installed
  --family F       initramfs-tools, dracut or mkinitcpio (default: detected)
  --cmdline TEXT   the laptop OS's kernel command line (default: /proc/cmdline
                   for /, else /etc/kernel/cmdline or /etc/fstab)

Examples:
  sudo stiefelctl setup-server-os --dry-run
  sudo stiefelctl setup-server-os
  sudo stiefelctl setup-server-os --root /mnt/laptop --yes
  sudo stiefelctl setup-server-os --uninstall
`;

export const setupServerOsCommand: Command = {
  name: 'setup-server-os',
  summary: 'install the network-root hooks into the laptop OS',
  help: HELP,
  async run(argv, ctx) {
    const { values } = parseCommandArgs(
      'setup-server-os',
      argv,
      {
        root: { type: 'string' },
        'dry-run': { type: 'boolean' },
        yes: { type: 'boolean' },
        uninstall: { type: 'boolean' },
        family: { type: 'string' },
        cmdline: { type: 'string' },
      },
      { min: 0, max: 0, names: '' },
    );
    const family = values.family;
    if (family !== undefined && !(INITRAMFS_FAMILIES as readonly string[]).includes(family)) {
      throw new UsageError(`--family must be one of ${INITRAMFS_FAMILIES.join(', ')}, not '${family}'`, { command: 'setup-server-os' });
    }
    if (values.uninstall && (family !== undefined || values.cmdline !== undefined)) {
      throw new UsageError('--uninstall takes no --family or --cmdline', { command: 'setup-server-os' });
    }
    const root = resolve(ctx.cwd, values.root ?? '/');
    let runningCmdline: string | undefined;
    if (root === '/') {
      try {
        runningCmdline = readFileSync('/proc/cmdline', 'utf8');
      } catch {
        runningCmdline = undefined;
      }
    }
    const plan = await planServerOs({
      root,
      uninstall: values.uninstall ?? false,
      family: family as InitramfsFamily | undefined,
      cmdline: values.cmdline,
      runningCmdline,
    });
    for (const r of plan.reasons) ctx.log.info(r);
    if (plan.changes.length === 0) {
      ctx.log.info(values.uninstall ? 'nothing of stiefelsystem is installed; nothing to do' : 'already set up; nothing to change');
      return 0;
    }
    for (const c of plan.changes) {
      const diff = unifiedDiff(c.path, c.before, c.after);
      ctx.stdout(diff || `mode of ${c.path}: ${(c.modeBefore ?? 0).toString(8)} -> ${c.mode.toString(8)}\n`);
    }
    const recordedFamily = plan.record?.family;
    const regen = recordedFamily ? regenerateCommand(recordedFamily).join(' ') : 'the initramfs tool';
    const summary = `${plan.changes.length} file(s) to ${values.uninstall ? 'remove or change' : 'write'} under ${root}, then: ${regen}`;
    if (values['dry-run']) {
      ctx.log.info(`dry run: ${summary}; nothing was changed`);
      return 0;
    }
    if (process.getuid?.() !== 0) {
      throw new StiefelError('E_NEEDS_ROOT', 'setup-server-os writes to /etc and regenerates the initramfs: run it as root (or with --dry-run to see the changes)');
    }
    if (!values.yes) {
      const answer = await confirmOnTerminal(`${summary}. Go ahead?`, ctx.signal);
      if (answer === null) throw new UsageError('no terminal to ask on: pass --yes to apply, or --dry-run to only look', { command: 'setup-server-os' });
      if (!answer) {
        ctx.log.info('nothing was changed');
        return 1;
      }
    }
    const result = await applyServerOs(plan, { runner: systemRunner, log: ctx.log });
    ctx.log.info(
      `done: ${plan.changes.length} file(s) changed${result.regenerated ? `, initramfs regenerated (${result.regenerated.join(' ')})` : ''}`,
    );
    return 0;
  },
};
