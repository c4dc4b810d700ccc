import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { confirmOnTerminal } from '../cli/confirm';
import { systemRunner } from '../disk/runner';
import { StiefelError, UsageError } from '../errors';
import { INITRAMFS_FAMILIES, type InitramfsFamily } from '../server-os/family';
import { unifiedDiff } from '../server-os/diff';
import { applyServerOs, buildStiefelOs, detectBootMenu, newestKernel, planServerOs, regenerateCommand } from '../server-os/setup';

const HELP = `Usage: stiefelctl setup-server-os [--root DIR] [--dry-run] [--yes] [--uninstall]
                                  [--family F] [--cmdline TEXT]
       stiefelctl setup-server-os --rebuild-image [--kernel-release R] [--root DIR]

Prepares the laptop: installs into its OS what its own initramfs needs to
boot from the laptop's disk over the network on the desktop, regenerates the
initramfs with the distribution's own tool, builds stiefelOS for this laptop
into /boot/stiefelsystem (with its config and secret; on the ESP too for
systemd-boot), adds the boot-menu entry "stiefelsystem: serve this disk"
(an /etc/grub.d snippet and update-grub, or a BootLoaderSpec entry for
systemd-boot), a kernel hook that rebuilds stiefelOS when the kernel changes
(/etc/kernel/postinst.d/zz-stiefelsystem), and enables stiefel-autokexec.
Needs a config first ('stiefelctl init'). The initramfs parts:
  initramfs-tools (Debian, Ubuntu)   hook + local-top script
  dracut (Fedora, RHEL, openSUSE...) module 90stiefelsystem
  mkinitcpio (Arch)                  install + runtime hook, added to HOOKS
plus one shared attach script (/usr/lib/stiefelsystem/stiefel-attach), rules
that keep NetworkManager and systemd-networkd off the link, and a record in
/boot/stiefelsystem-os.json of the family and the command line for the server.
The initramfs does nothing different unless the command line carries
stiefel.mac= (set by 'stiefelctl client').

Every change is shown as a diff and asked for. Running it again changes
nothing; --uninstall removes every trace. --rebuild-image only builds
stiefelOS again (after a change of the config, or from the kernel hook).

Options:
  --root DIR       the laptop OS's root directory (default /); for another
                   root the regeneration runs in a chroot
  --dry-run        show the changes and change nothing
  --yes            do not ask
  --uninstall      remove everything this command installed
  --family F       initramfs-tools, dracut or mkinitcpio (default: detected)
  --cmdline TEXT   the laptop OS's kernel command line (default: /proc/cmdline
                   for /, else /etc/kernel/cmdline or /etc/fstab)
  --rebuild-image  build stiefelOS again, nothing else
  --kernel-release R  with --rebuild-image: from /boot/vmlinuz-R (default: the
                   newest kernel installed)

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
        'rebuild-image': { type: 'boolean' },
        'kernel-release': { type: 'string' },
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
    if (values['kernel-release'] !== undefined && !values['rebuild-image']) throw new UsageError('--kernel-release goes with --rebuild-image', { command: 'setup-server-os' });
    // stiefelctl as it runs inside root: this very program for '/', the laptop OS's own in a chroot.
    const stiefelctl = root === '/' ? [process.execPath, process.argv[1]!] : ['stiefelctl'];
    if (values['rebuild-image']) {
      const release = values['kernel-release'];
      if (release !== undefined && !/^[A-Za-z0-9._+~-]+$/.test(release)) throw new UsageError(`--kernel-release must be a kernel release such as $(uname -r), not '${release}'`, { command: 'setup-server-os' });
      const kernel = release !== undefined ? `/boot/vmlinuz-${release}` : await newestKernel(root);
      if (!kernel) throw new StiefelError('E_SERVER_OS_KERNEL', `no kernel with its modules in ${root === '/' ? '' : root}/boot: install the distribution's kernel package first`);
      await buildStiefelOs(root, kernel, await detectBootMenu(root), { runner: systemRunner, log: ctx.log, stiefelctl });
      return 0;
    }
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
      runner: systemRunner,
    });
    for (const r of plan.reasons) ctx.log.info(r);
    if (plan.changes.length === 0 && plan.actions.length === 0) {
      ctx.log.info(values.uninstall ? 'nothing of stiefelsystem is installed; nothing to do' : 'already set up; nothing to change');
      return 0;
    }
    for (const c of plan.changes) {
      const diff = unifiedDiff(c.path, c.before, c.after);
      ctx.stdout(diff || `mode of ${c.path}: ${(c.modeBefore ?? 0).toString(8)} -> ${c.mode.toString(8)}\n`);
    }
    const recordedFamily = plan.record?.family;
    const regen = recordedFamily ? regenerateCommand(recordedFamily).join(' ') : 'the initramfs tool';
    const needsRegen = plan.changes.some((c) => !/\/loader\/entries\/|^\/etc\/(grub\.d|systemd|kernel)\//.test(c.path) && !c.path.endsWith('stiefelsystem-os.json'));
    const steps = [...(needsRegen ? [regen] : []), ...plan.actions];
    const summary = `${plan.changes.length} file(s) to ${values.uninstall ? 'remove or change' : 'write'} under ${root}${steps.length ? `, then: ${steps.join('; ')}` : ''}`;
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
    const result = await applyServerOs(plan, { runner: systemRunner, log: ctx.log, stiefelctl });
    ctx.log.info(
      `done: ${plan.changes.length} file(s) changed${result.regenerated ? `, initramfs regenerated (${result.regenerated.join(' ')})` : ''}`,
    );
    return 0;
  },
};
