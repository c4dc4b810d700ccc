// A Debian system in a directory, for installing the .deb the way a laptop
// does. The base (debootstrap --variant=minbase plus the packages asked for)
// is made once and cached in the test cache, keyed by a hash of its recipe;
// every test works on a copy of it, with /proc, /sys and /dev mounted, /run
// a tmpfs as on a running system, the host's resolver, and the downloaded
// .debs kept in the cache across runs (mounted on the copy's
// /var/cache/apt/archives, so a second run downloads nothing).
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, readdir, rename, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { systemRunner } from '../../src/disk/runner';
import { silentLogger } from '../../src/log';
import { withChrootMounts } from '../../src/server-os/setup';
import { pruneCache } from './test-cache';

const RECIPE_VERSION = 1;
const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
const DEFAULT_SECURITY = 'http://deb.debian.org/debian-security';
/** The environment of every command in the chroot: nothing of the host's leaks in (NODE_EXTRA_CA_CERTS, proxies). */
const CHROOT_ENV = [
  'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  'HOME=/root',
  'LANG=C.UTF-8',
  'DEBIAN_FRONTEND=noninteractive',
];

export interface DebianBaseOptions {
  /** Names the cache entry (package-chroot-NAME-HASH); other entries of that name go. */
  name: string;
  /** Packages debootstrap adds to minbase. */
  include: readonly string[];
  cacheDir: string;
  suite?: string;
  mirror?: string;
  log?: (line: string) => void;
}

export interface ShResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function spawnText(file: string, args: string[]): Promise<ShResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function must(file: string, args: string[]): Promise<string> {
  const r = await spawnText(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code}:\n${(r.stderr || r.stdout).trim().split('\n').slice(-20).join('\n')}`);
  return r.stdout;
}

function sourcesList(suite: string, mirror: string): string {
  return [`deb ${mirror} ${suite} main`, `deb ${mirror} ${suite}-updates main`, `deb ${DEFAULT_SECURITY} ${suite}-security main`, ''].join('\n');
}

/** The package layer's laptop (test/package/deb-install.test.ts): minbase with systemd, a kernel and initramfs-tools. Also made by the prebuild. */
export const PACKAGE_LAPTOP_BASE: Pick<DebianBaseOptions, 'name' | 'include'> = { name: 'laptop', include: ['systemd', 'linux-image-amd64', 'initramfs-tools'] };

/** The cached base system's directory, made with debootstrap when missing (a minute or two, once). */
export async function debianBase(options: DebianBaseOptions): Promise<string> {
  const suite = options.suite ?? 'bookworm';
  const mirror = options.mirror ?? DEFAULT_MIRROR;
  const log = options.log ?? (() => undefined);
  const include = [...options.include].sort();
  const key = createHash('sha256')
    .update(JSON.stringify({ RECIPE_VERSION, suite, mirror, include, sources: sourcesList(suite, mirror) }))
    .digest('hex')
    .slice(0, 16);
  const prefix = `package-chroot-${options.name}-`;
  const dir = join(options.cacheDir, `${prefix}${key}`);
  await mkdir(options.cacheDir, { recursive: true });
  for (const gone of pruneCache(options.cacheDir, prefix, basename(dir))) log(`removed ${gone} from the cache (built from other inputs)`);
  if (existsSync(dir)) return dir;
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    log(`debootstrap ${suite} (${options.name}: minbase + ${include.join(', ')}) into the cache; this takes a minute or two once`);
    await must('debootstrap', ['--variant=minbase', `--include=${include.join(',')}`, suite, tmp, mirror]);
    await writeFile(join(tmp, 'etc/apt/sources.list'), sourcesList(suite, mirror));
    // A test system: dpkg need not fsync every file it unpacks.
    await writeFile(join(tmp, 'etc/dpkg/dpkg.cfg.d/stiefel-test-unsafe-io'), 'force-unsafe-io\n');
    await must('sh', ['-c', `rm -rf ${tmp}/var/cache/apt/archives/*.deb ${tmp}/var/lib/apt/lists/*`]);
    await rename(tmp, dir);
  } catch (err) {
    await removeCopy(tmp).catch(() => undefined);
    // Made meanwhile by another run (the prebuild, or the package layer beside it): that one is as good.
    if (existsSync(join(dir, 'etc/apt/sources.list'))) return dir;
    throw err;
  }
  return dir;
}

/** A copy of a base system, with what commands in it need mounted. */
export class Chroot {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  /** Runs a shell script inside the chroot as root, with a clean environment. */
  sh(script: string): Promise<ShResult> {
    return spawnText('chroot', [this.root, 'env', '-i', ...CHROOT_ENV, 'sh', '-c', script]);
  }

  /** Like sh(), but a non-zero exit is an error showing the script's output. */
  async must(script: string): Promise<string> {
    const r = await this.sh(script);
    if (r.code !== 0) throw new Error(`in the chroot, '${script}' exited ${r.code}:\n${`${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-25).join('\n')}`);
    return r.stdout;
  }

  /** Every path on the chroot's own file system (find / -xdev), with its type (f, d, l, ...), sorted. */
  async fileList(): Promise<string[]> {
    const out = await must('find', [this.root, '-xdev', '-printf', '%y /%P\n']);
    return out.split('\n').filter(Boolean).sort();
  }
}

export interface WithChrootOptions {
  base: string;
  /** Where the copy goes (removed afterwards); a directory on the same file system as the cache copies fastest. */
  workDir: string;
  /** Kept across runs: the .debs apt downloads. */
  debCache: string;
  log?: (line: string) => void;
}

/** Mount points at or below `dir`, from the kernel's table. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4]?.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(`${dir}/`)));
}

/**
 * Removes a copy, but never while anything is mounted in it: /dev there is
 * the host's own, and rm would empty it.
 */
async function removeCopy(root: string): Promise<void> {
  const mounted = mountsUnder(root);
  if (mounted.length) throw new Error(`still mounted, so ${root} is left in place: ${mounted.join(', ')}; unmount them, then remove it`);
  await must('rm', ['-rf', '--one-file-system', root]);
}

/** Copies the base, mounts what it needs, runs fn, and always unmounts and removes the copy. */
export async function withChroot<T>(options: WithChrootOptions, fn: (chroot: Chroot) => Promise<T>): Promise<T> {
  const root = join(options.workDir, `chroot-${randomBytes(4).toString('hex')}`);
  await mkdir(options.workDir, { recursive: true });
  await mkdir(options.debCache, { recursive: true });
  // Copies an interrupted run left behind (unless something is still mounted in them).
  for (const old of (await readdir(options.workDir)).filter((n) => n.startsWith('chroot-'))) {
    await removeCopy(join(options.workDir, old)).catch((err: Error) => options.log?.(err.message));
  }
  await must('cp', ['-a', options.base, root]);
  try {
    const chroot = new Chroot(root);
    await copyFile('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
    return await withChrootMounts(
      root,
      async () => {
        const archives = join(root, 'var/cache/apt/archives');
        const run = join(root, 'run');
        await must('mount', ['--bind', options.debCache, archives]);
        try {
          await must('mount', ['-t', 'tmpfs', '-o', 'mode=0755,nosuid,nodev', 'tmpfs', run]);
          try {
            return await fn(chroot);
          } finally {
            await must('umount', [run]);
          }
        } finally {
          // Only .debs the archive still offers stay (apt's autoclean), so the cache follows Debian's point releases.
          await chroot.sh('apt-get autoclean -qq');
          await must('umount', [archives]);
        }
      },
      { runner: systemRunner, log: silentLogger },
    );
  } finally {
    await removeCopy(root);
  }
}
