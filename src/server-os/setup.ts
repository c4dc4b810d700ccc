// `stiefelctl setup-server-os`: installs the network-root integration into
// the laptop OS (or removes it), then has the OS's own tool regenerate its
// initramfs. Planning reads files only; applying writes each file atomically
// and puts every file back if the regeneration fails.
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import type { Logger } from '../log';
import { runChecked, type CommandRunner } from '../disk/runner';
import { detectFamily, type InitramfsFamily } from './family';
import {
  BOOT_RECORD_PATH,
  MKINITCPIO_CONF,
  cleanCmdline,
  desiredFiles,
  grubDefaultCmdline,
  planChanges,
  rootFromFstab,
  type BootRecord,
  type CurrentFile,
  type FileChange,
} from './plan';

export interface ServerOsPlanOptions {
  /** The laptop OS's root directory; '/' for the running system. */
  root: string;
  uninstall: boolean;
  /** Overrides detection. */
  family?: InitramfsFamily;
  /** Overrides the command line found on the system. */
  cmdline?: string;
  /** /proc/cmdline of the running system, used when root is '/'. */
  runningCmdline?: string;
}

export interface ServerOsPlan {
  root: string;
  /** null when uninstalling. */
  record: BootRecord | null;
  /** Where the family and the command line came from, for the user. */
  reasons: string[];
  changes: FileChange[];
}

async function readCurrent(root: string, path: string): Promise<CurrentFile> {
  const full = join(root, path);
  try {
    const [content, st] = await Promise.all([readFile(full, 'utf8'), stat(full)]);
    return { content, mode: st.mode & 0o7777 };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return { content: null, mode: null };
    throw new StiefelError('E_SERVER_OS_READ', `cannot read ${full}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function findCmdline(options: ServerOsPlanOptions): Promise<{ cmdline: string; from: string }> {
  if (options.cmdline !== undefined) return { cmdline: cleanCmdline(options.cmdline), from: '--cmdline' };
  if (options.root === '/' && options.runningCmdline) {
    return { cmdline: cleanCmdline(options.runningCmdline), from: '/proc/cmdline (the running system)' };
  }
  const kernelCmdline = await readText(join(options.root, 'etc/kernel/cmdline'));
  if (kernelCmdline?.trim()) return { cmdline: cleanCmdline(kernelCmdline), from: '/etc/kernel/cmdline' };
  const root = rootFromFstab((await readText(join(options.root, 'etc/fstab'))) ?? '');
  const grub = grubDefaultCmdline((await readText(join(options.root, 'etc/default/grub'))) ?? '');
  if (root) {
    return { cmdline: cleanCmdline(`${root} ro ${grub ?? ''}`), from: `/etc/fstab${grub !== null ? ' and /etc/default/grub' : ''}` };
  }
  throw new StiefelError(
    'E_NO_CMDLINE',
    `cannot tell the laptop OS's kernel command line (no /etc/kernel/cmdline, no / in /etc/fstab under ${options.root}); pass --cmdline 'root=... ro'`,
  );
}

export async function planServerOs(options: ServerOsPlanOptions): Promise<ServerOsPlan> {
  const root = options.root;
  if (!(await isDir(root))) throw new StiefelError('E_SERVER_OS_ROOT', `${root} is not a directory; --root takes the laptop OS's mounted root directory`);
  const reasons: string[] = [];
  let record: BootRecord | null = null;
  if (!options.uninstall) {
    let family = options.family;
    if (family) reasons.push(`initramfs family: ${family} (--family)`);
    else {
      const found = await detectFamily(root);
      family = found.family;
      reasons.push(`initramfs family: ${family} (found ${found.evidence})`);
    }
    const { cmdline, from } = await findCmdline(options);
    reasons.push(`laptop OS command line: ${cmdline} (from ${from})`);
    record = { family, cmdline };
  }
  const facts = {
    networkManager: (await isDir(join(root, 'etc/NetworkManager'))) || (await readCurrent(root, '/usr/sbin/NetworkManager')).mode !== null,
    networkd:
      (await readCurrent(root, '/usr/lib/systemd/systemd-networkd')).mode !== null ||
      (await readCurrent(root, '/lib/systemd/systemd-networkd')).mode !== null,
    mkinitcpioConf: (await readCurrent(root, MKINITCPIO_CONF)).content,
  };
  const desired = desiredFiles(record, facts);
  const current = new Map<string, CurrentFile>();
  for (const d of desired) current.set(d.path, await readCurrent(root, d.path));
  return { root, record, reasons, changes: planChanges(desired, current) };
}

/** The family's own command that rebuilds every installed kernel's initramfs. */
export function regenerateCommand(family: InitramfsFamily): string[] {
  switch (family) {
    case 'initramfs-tools':
      return ['update-initramfs', '-u', '-k', 'all'];
    case 'dracut':
      return ['dracut', '--force', '--regenerate-all'];
    case 'mkinitcpio':
      return ['mkinitcpio', '-P'];
  }
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.stiefel-tmp`;
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

async function putFile(root: string, path: string, content: string | null, mode: number | null): Promise<void> {
  const full = join(root, path);
  if (content === null) await rm(full, { force: true });
  else await writeAtomically(full, content, mode ?? 0o644);
}

/** Runs `argv` inside `root` (chroot with /proc, /sys and /dev), or directly for '/'. */
async function runInRoot(runner: CommandRunner, root: string, argv: string[], log: Logger): Promise<void> {
  const [file, ...args] = argv as [string, ...string[]];
  if (root === '/') {
    await runChecked(runner, 'E_REGENERATE', file, args);
    return;
  }
  await withChrootMounts(
    root,
    async () => {
      log.debug(`chroot ${root} ${argv.join(' ')}`);
      await runChecked(runner, 'E_REGENERATE', 'chroot', [root, ...argv]);
    },
    { runner, log },
  );
}

/** Runs `fn` with /proc, /sys and /dev mounted inside `root`, unmounting them again whatever happens. */
export async function withChrootMounts<T>(root: string, fn: () => Promise<T>, deps: { runner: CommandRunner; log: Logger }): Promise<T> {
  const { runner, log } = deps;
  const mounted: string[] = [];
  try {
    for (const [where, margs] of [
      ['proc', ['-t', 'proc', 'proc']],
      ['sys', ['-t', 'sysfs', 'sysfs']],
      ['dev', ['--bind', '/dev']],
    ] as const) {
      const target = join(root, where);
      await mkdir(target, { recursive: true });
      await runChecked(runner, 'E_CHROOT_MOUNT', 'mount', [...margs, target]);
      mounted.unshift(target);
    }
    return await fn();
  } finally {
    for (const m of mounted) {
      const r = await runner.run('umount', [m]);
      if (r.code !== 0) log.warn(`could not unmount ${m}: ${r.stderr.trim()}`);
    }
  }
}

export interface ApplyResult {
  regenerated: string[] | null;
}

/**
 * Writes the plan's changes and regenerates the initramfs. If regenerating
 * fails, every file is put back as it was and the error is rethrown.
 */
export async function applyServerOs(plan: ServerOsPlan, deps: { runner: CommandRunner; log: Logger }): Promise<ApplyResult> {
  const { runner, log } = deps;
  if (plan.changes.length === 0) return { regenerated: null };
  const done: FileChange[] = [];
  try {
    for (const c of plan.changes) {
      await putFile(plan.root, c.path, c.after, c.mode);
      done.push(c);
      log.info(`${c.after === null ? 'removed' : c.before === null ? 'created' : 'updated'} ${c.path}`);
    }
    // Regenerate with the family now installed, or (uninstalling) the one the
    // record named; the boot record being the only change needs none.
    const family = plan.record?.family ?? familyOfRemoved(plan.changes);
    const needsRegeneration = plan.changes.some((c) => c.path !== BOOT_RECORD_PATH);
    if (!family || !needsRegeneration) return { regenerated: null };
    const argv = regenerateCommand(family);
    log.info(`regenerating the initramfs: ${argv.join(' ')}${plan.root === '/' ? '' : ` (in ${plan.root})`}`);
    await runInRoot(runner, plan.root, argv, log);
    return { regenerated: argv };
  } catch (err) {
    for (const c of done.reverse()) {
      try {
        await putFile(plan.root, c.path, c.before, c.modeBefore);
      } catch (undoErr) {
        log.warn(`could not put ${c.path} back: ${undoErr instanceof Error ? undoErr.message : String(undoErr)}`);
      }
    }
    if (done.length) log.warn(`put ${done.length} file(s) back as they were`);
    throw err;
  }
}

/** The family whose files an uninstall removes, from the boot record it removes. */
function familyOfRemoved(changes: readonly FileChange[]): InitramfsFamily | null {
  const record = changes.find((c) => c.path === BOOT_RECORD_PATH)?.before;
  if (record) {
    try {
      const family = (JSON.parse(record) as { family?: unknown }).family;
      if (family === 'initramfs-tools' || family === 'dracut' || family === 'mkinitcpio') return family;
    } catch {
      // fall through to the files
    }
  }
  if (changes.some((c) => c.path.startsWith('/etc/initramfs-tools/'))) return 'initramfs-tools';
  if (changes.some((c) => c.path.includes('dracut'))) return 'dracut';
  if (changes.some((c) => c.path.includes('initcpio'))) return 'mkinitcpio';
  return null;
}
