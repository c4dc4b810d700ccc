// `stiefelctl setup-server-os`: installs the network-root integration into
// the laptop OS (or removes it), then has the OS's own tool regenerate its
// initramfs. Planning reads files only; applying writes each file atomically
// and puts every file back if the regeneration fails.
import { chmod, copyFile, lstat, mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { parseDocument } from 'yaml';
import { parseConfigText } from '../config/load';
import { StiefelError, errnoCode } from '../errors';
import type { Logger } from '../log';
import { runChecked, type CommandRunner } from '../disk/runner';
import { detectFamily, type InitramfsFamily } from './family';
import { ESP_STIEFELOS_DIR, STIEFELOS_DIR, type BootMenu } from './boot-menu';
import {
  BOOT_RECORD_PATH,
  MKINITCPIO_CONF,
  PACKAGED_UNIT_PATH,
  UNITS,
  localUnitPath,
  packagedUnitPath,
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
  /** Runs findmnt and lsblk to find the disk holding / when the config names none (root '/' only). */
  runner?: CommandRunner;
}

export interface ServerOsPlan {
  root: string;
  /** null when uninstalling. */
  record: BootRecord | null;
  /** Where the family and the command line came from, for the user. */
  reasons: string[];
  changes: FileChange[];
  bootMenu: BootMenu;
  /** The steps besides the files, in words (build stiefelOS, update grub.cfg, enable the service). */
  actions: string[];
  /** stiefelOS is to be built from this kernel (a path inside root); undefined: it is there already, or uninstalling. */
  imageKernel: string | undefined;
  /** server.disk for stiefelOS when the config names none (the disk holding /, found while planning). */
  imageDisk: string | undefined;
}

/** The config inside the laptop OS that stiefelOS embeds (with its secret). */
export const LAPTOP_CONFIG_PATH = '/etc/stiefelsystem/config.yaml';

const exists = async (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

/** The boot loader of the laptop OS under `root`: systemd-boot (an ESP with loader/), else grub, else none. */
export async function detectBootMenu(root: string): Promise<BootMenu> {
  for (const esp of ['/boot/efi', '/efi', '/boot']) {
    if ((await exists(join(root, esp, 'loader/loader.conf'))) || (await exists(join(root, esp, 'EFI/systemd/systemd-bootx64.efi')))) return { kind: 'systemd-boot', esp };
  }
  const grubCfg = (await exists(join(root, 'boot/grub/grub.cfg'))) || (await exists(join(root, 'boot/grub2/grub.cfg'))) || (await exists(join(root, 'etc/default/grub')));
  if (grubCfg) {
    if (await exists(join(root, 'usr/sbin/update-grub'))) return { kind: 'grub', update: ['update-grub'] };
    if (await exists(join(root, 'usr/sbin/grub2-mkconfig'))) return { kind: 'grub', update: ['grub2-mkconfig', '-o', '/boot/grub2/grub.cfg'] };
    if (await exists(join(root, 'usr/bin/grub-mkconfig'))) return { kind: 'grub', update: ['grub-mkconfig', '-o', '/boot/grub/grub.cfg'] };
    return { kind: 'none', why: 'grub is configured but neither update-grub nor grub-mkconfig is installed' };
  }
  return { kind: 'none', why: 'neither systemd-boot (an ESP with loader/) nor grub was found' };
}

/** The newest kernel under root/boot whose modules are installed: the one the laptop boots next. */
export async function newestKernel(root: string): Promise<string | undefined> {
  const names = await readdir(join(root, 'boot')).catch(() => [] as string[]);
  const releases = [];
  for (const n of names) {
    if (!n.startsWith('vmlinuz-')) continue;
    const r = n.slice('vmlinuz-'.length);
    if (await exists(join(root, 'lib/modules', r, 'modules.dep'))) releases.push(r);
  }
  releases.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const r = releases.at(-1);
  return r ? `/boot/vmlinuz-${r}` : undefined;
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
    bootMenu: await detectBootMenu(root),
    packagedUnit: await exists(join(root, PACKAGED_UNIT_PATH)),
    packaged: await packagedFiles(root),
  };
  const desired = desiredFiles(record, facts);
  const current = new Map<string, CurrentFile>();
  for (const d of desired) current.set(d.path, await readCurrent(root, d.path));
  const changes = planChanges(desired, current);
  const menu = facts.bootMenu;
  reasons.push(menu.kind === 'none' ? `boot-menu entry: none (${menu.why}); autokexec still starts the server` : `boot-menu entry: ${menu.kind}${menu.kind === 'systemd-boot' ? ` (ESP ${menu.esp})` : ''}`);
  const actions: string[] = [];
  let imageKernel: string | undefined;
  let imageDisk: string | undefined;
  const imagePresent = await exists(join(root, STIEFELOS_DIR, 'initrd.img'));
  if (record) {
    if (!(await exists(join(root, LAPTOP_CONFIG_PATH)))) {
      throw new StiefelError('E_SERVER_OS_CONFIG', `there is no ${join(root, LAPTOP_CONFIG_PATH)}: run 'stiefelctl init' first (stiefelOS for this laptop carries its config and secret)`);
    }
    if (!imagePresent || changes.length > 0) {
      imageDisk = await diskForImage(root, options.runner);
      imageKernel = await newestKernel(root);
      if (!imageKernel) throw new StiefelError('E_SERVER_OS_KERNEL', `no kernel with its modules in ${join(root, 'boot')}: install the distribution's kernel package first`);
      actions.push(`build stiefelOS from ${imageKernel} into ${STIEFELOS_DIR}${menu.kind === 'systemd-boot' ? ` and copy it to the ESP (${menu.esp}${menu.esp === '/boot' ? '' : ESP_STIEFELOS_DIR})` : ''}`);
    }
    for (const u of UNITS) if (!(await unitEnabled(root, u.name))) actions.push(`enable ${u.name}`);
  } else {
    if (imagePresent) actions.push(`remove stiefelOS (${STIEFELOS_DIR})`);
    for (const u of UNITS) if (await unitEnabled(root, u.name)) actions.push(`disable ${u.name}`);
  }
  if (menu.kind === 'grub' && changes.some((c) => c.path.startsWith('/etc/grub.d/'))) actions.push(`update the boot menu: ${menu.update.join(' ')}`);
  if (imageDisk) reasons.push(`the laptop's disk for stiefelOS: ${imageDisk} (the disk holding /; the config names none)`);
  return { root, record, reasons, changes, bootMenu: menu, actions, imageKernel, imageDisk };
}

/** The paths the stiefelsystem Debian package owns (dpkg's list of its files); empty without the package. */
export async function packagedFiles(root: string): Promise<Set<string>> {
  const text = await readFile(join(root, 'var/lib/dpkg/info/stiefelsystem.list'), 'utf8').catch(() => '');
  return new Set(text.split('\n').filter((l) => l.startsWith('/')));
}

/** Enabled for boot: the symlink systemctl enable makes. */
async function unitEnabled(root: string, unit: string): Promise<boolean> {
  // lstat: the link points into the laptop OS's tree, not this machine's.
  return lstat(join(root, 'etc/systemd/system/multi-user.target.wants', unit)).then(() => true, () => false);
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

export interface ApplyDeps {
  runner: CommandRunner;
  log: Logger;
  /** How to run stiefelctl inside root (['stiefelctl'] in a chroot; node and the bundle for '/'). */
  stiefelctl: string[];
}

/** server.disk for stiefelOS: undefined when the config names one; else the disk holding / (root '/' only). */
async function diskForImage(root: string, runner: CommandRunner | undefined): Promise<string | undefined> {
  const config = parseConfigText(await readFile(join(root, LAPTOP_CONFIG_PATH), 'utf8'), LAPTOP_CONFIG_PATH);
  if (config.server.disk !== undefined) return undefined;
  const fix = `set server.disk in ${join(root, LAPTOP_CONFIG_PATH)} to the laptop's disk (e.g. /dev/nvme0n1, or PTUUID= from lsblk -o PTUUID)`;
  if (root !== '/' || !runner) throw new StiefelError('E_SERVER_OS_DISK', `server.disk is not set and the disk of another root cannot be told: ${fix}`);
  return detectDisk(runner, fix);
}

/** The laptop's disk as stiefelOS can name it, when the config does not: the disk holding `/`, by its partition table's id. */
async function detectDisk(runner: CommandRunner, fix: string): Promise<string> {
  const found = await runner.run('findmnt', ['-n', '-o', 'SOURCE', '/']);
  const source = found.stdout.trim();
  if (found.code !== 0 || !source.startsWith('/dev/')) throw new StiefelError('E_SERVER_OS_DISK', `cannot tell which disk holds / (findmnt: ${source || found.stderr.trim() || 'no mount'}; a chroot or a container?): ${fix}`);
  const tree = JSON.parse(await runChecked(runner, 'E_SERVER_OS_DISK', 'lsblk', ['-J', '-s', '-o', 'NAME,TYPE,PTUUID', source])) as { blockdevices?: Array<Record<string, unknown>> };
  // -s lists the device with its parents inside it; the disk is at the bottom.
  const walk = (d: Record<string, unknown>): Record<string, unknown> | undefined =>
    d.type === 'disk' ? d : ((d.children as Array<Record<string, unknown>> | undefined) ?? []).map(walk).find(Boolean);
  const disk = (tree.blockdevices ?? []).map(walk).find(Boolean);
  const ptuuid = typeof disk?.ptuuid === 'string' ? disk.ptuuid : '';
  if (!ptuuid) throw new StiefelError('E_SERVER_OS_DISK', `cannot tell which disk holds / (${source}, no partition-table id): ${fix}`);
  return `PTUUID=${ptuuid}`;
}

/**
 * Builds stiefelOS for this laptop into STIEFELOS_DIR with the laptop's own
 * kernel, programs, config and secret, from inside the laptop OS (a chroot
 * for another root). The config gets server.disk when it names none.
 */
export async function buildStiefelOs(root: string, kernel: string, menu: BootMenu, deps: ApplyDeps, disk?: string): Promise<void> {
  const { runner, log } = deps;
  const text = await readFile(join(root, LAPTOP_CONFIG_PATH), 'utf8');
  const config = parseConfigText(text, LAPTOP_CONFIG_PATH);
  const doc = parseDocument(text);
  const imageDisk = disk ?? (await diskForImage(root, runner));
  if (imageDisk !== undefined) doc.setIn(['server', 'disk'], imageDisk);
  const tmpName = `/var/tmp/stiefel-image-config-${randomBytes(4).toString('hex')}.yaml`;
  await mkdir(join(root, 'var/tmp'), { recursive: true });
  await writeFile(join(root, tmpName), doc.toString(), { mode: 0o600 });
  try {
    log.info(`building stiefelOS from ${kernel} into ${STIEFELOS_DIR}${root === '/' ? '' : ` (in ${root})`}`);
    // With PXE on (the default) stiefelOS carries a copy of itself without
    // the secret, to serve to a desktop that PXE-boots; the copy build-image
    // leaves beside it is not needed on /boot.
    const pxe = config.server.pxe.enabled ? ['--pxe'] : [];
    await runInRoot(runner, root, [...deps.stiefelctl, 'build-image', '--kernel', kernel, '--out', STIEFELOS_DIR, '--config', tmpName, '--secret', config.secret, ...pxe], log);
    if (pxe.length) await rm(join(root, STIEFELOS_DIR, 'pxe'), { recursive: true, force: true });
  } finally {
    await rm(join(root, tmpName), { force: true });
  }
  if (menu.kind === 'systemd-boot' && menu.esp !== '/boot') {
    // systemd-boot reads only the ESP: the entry's files go there too.
    const dir = join(root, menu.esp, ESP_STIEFELOS_DIR);
    await mkdir(dir, { recursive: true });
    for (const f of ['vmlinuz', 'initrd.img']) await copyFile(join(root, STIEFELOS_DIR, f), join(dir, f));
    log.info(`copied stiefelOS to the ESP (${join(menu.esp, ESP_STIEFELOS_DIR)})`);
  }
}

/**
 * Enables (or disables) a unit the way `systemctl enable` does: its WantedBy
 * symlink; and starts (stops) it on a running system (a unit whose
 * conditions do not hold there, like the laptop watch on the laptop itself,
 * only records that it was skipped).
 */
async function setUnitEnabled(root: string, unit: string, enabled: boolean, deps: ApplyDeps): Promise<void> {
  const link = join(root, 'etc/systemd/system/multi-user.target.wants', unit);
  const live = root === '/' && (await exists('/run/systemd/system'));
  if (enabled) {
    const target = (await exists(join(root, packagedUnitPath(unit)))) ? packagedUnitPath(unit) : localUnitPath(unit);
    await mkdir(dirname(link), { recursive: true });
    await rm(link, { force: true });
    await symlink(target, link);
    deps.log.info(`enabled ${unit}`);
    if (live) {
      await runChecked(deps.runner, 'E_SYSTEMCTL', 'systemctl', ['daemon-reload']);
      await runChecked(deps.runner, 'E_SYSTEMCTL', 'systemctl', ['restart', unit]);
    }
  } else {
    if (live) await deps.runner.run('systemctl', ['stop', unit]);
    await rm(link, { force: true });
    deps.log.info(`disabled ${unit}`);
    if (live) await deps.runner.run('systemctl', ['daemon-reload']);
  }
}

/**
 * Writes the plan's changes and regenerates the initramfs. If regenerating
 * fails, every file is put back as it was and the error is rethrown.
 */
export async function applyServerOs(plan: ServerOsPlan, deps: ApplyDeps): Promise<ApplyResult> {
  const { runner, log } = deps;
  if (plan.changes.length === 0 && plan.actions.length === 0) return { regenerated: null };
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
    const needsRegeneration = plan.changes.some((c) => c.path !== BOOT_RECORD_PATH && !c.path.includes('/loader/entries/') && !c.path.startsWith('/etc/grub.d/') && !c.path.startsWith('/etc/systemd/') && !c.path.startsWith('/etc/kernel/'));
    let regenerated: string[] | null = null;
    if (family && needsRegeneration) {
      regenerated = regenerateCommand(family);
      log.info(`regenerating the initramfs: ${regenerated.join(' ')}${plan.root === '/' ? '' : ` (in ${plan.root})`}`);
      await runInRoot(runner, plan.root, regenerated, log);
    }
    if (plan.record && plan.imageKernel) await buildStiefelOs(plan.root, plan.imageKernel, plan.bootMenu, deps, plan.imageDisk);
    if (!plan.record) await removeStiefelOs(plan.root, plan.bootMenu, log);
    const menu = plan.bootMenu;
    if (menu.kind === 'grub' && plan.changes.some((c) => c.path.startsWith('/etc/grub.d/'))) {
      log.info(`updating the boot menu: ${menu.update.join(' ')}`);
      await runInRoot(runner, plan.root, menu.update, log);
    }
    for (const u of UNITS) {
      if (plan.actions.includes(`enable ${u.name}`)) await setUnitEnabled(plan.root, u.name, true, deps);
      if (plan.actions.includes(`disable ${u.name}`)) await setUnitEnabled(plan.root, u.name, false, deps);
    }
    return { regenerated };
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

async function removeStiefelOs(root: string, menu: BootMenu, log: Logger): Promise<void> {
  const dirs = [STIEFELOS_DIR, ...(menu.kind === 'systemd-boot' && menu.esp !== '/boot' ? [join(menu.esp, ESP_STIEFELOS_DIR)] : [])];
  for (const d of dirs) {
    if (!(await exists(join(root, d)))) continue;
    await rm(join(root, d), { recursive: true, force: true });
    log.info(`removed ${d}`);
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
