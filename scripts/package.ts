// `npm run package`: builds dist/stiefelsystem_VERSION_all.deb with dpkg-deb,
// from the bundle (dist/stiefelctl.js, made by `npm run build` just before),
// the assets and packaging/deb/ (control template, maintainer scripts,
// changelog, copyright header). No debhelper: the few things it would do are
// written out in packaging/deb/ and here.
//
//   node --import tsx scripts/package.ts [--out DIR]
//
// Reproducible: every time stamp is SOURCE_DATE_EPOCH (default: the date of
// the newest changelog entry, as dpkg-buildpackage does), owners are root,
// modes are set here, gzip carries no name or time; two builds from the same
// inputs are byte-identical.
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ATTACH_PATH, RECONNECT_PATH } from '../src/server-os/plan';

const ROOT = join(__dirname, '..');
const DEB_DIR = join(ROOT, 'packaging', 'deb');
const BUNDLE = join(ROOT, 'dist', 'stiefelctl.js');
const METAFILE = join(ROOT, 'dist', 'stiefelctl.meta.json');
const PACKAGE = 'stiefelsystem';
const DOC_DIR = `/usr/share/doc/${PACKAGE}`;

const EXEC = 0o755;
const TEXT = 0o644;

class PackageError extends Error {}

interface PackageFile {
  /** Absolute path on the installed system. */
  path: string;
  mode: number;
  data: Buffer;
}

interface Inputs {
  version: string;
  maintainer: string;
  /** Seconds since the epoch, for every time stamp. */
  epoch: number;
  changelog: ChangelogEntry[];
}

interface ChangelogEntry {
  version: string;
  date: Date;
}

function usage(message: string): never {
  throw new PackageError(`${message}; usage: npm run package [-- --out DIR]`);
}

function parseArgs(argv: string[]): { out: string } {
  let out = join(ROOT, 'dist');
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--out') {
      const v = argv[++i];
      if (!v) usage('--out needs a directory');
      out = v;
    } else usage(`unknown argument '${a}'`);
  }
  return { out };
}

const read = (path: string) => readFileSync(path);
const readText = (path: string) => readFileSync(path, 'utf8');
const asset = (name: string) => read(join(ROOT, 'assets', name));

// --- inputs ---------------------------------------------------------------

/** The entries of a Debian changelog, newest first: version and date of each. */
export function parseChangelog(text: string): ChangelogEntry[] {
  const entries: ChangelogEntry[] = [];
  let version: string | null = null;
  for (const line of text.split('\n')) {
    const head = /^[a-z0-9][a-z0-9+.-]* \(([^)\s]+)\) /.exec(line);
    if (head) {
      version = head[1]!;
      continue;
    }
    const trailer = /^ -- .+ <[^>]+> {2}(.+)$/.exec(line);
    if (trailer && version !== null) {
      const date = new Date(trailer[1]!);
      if (Number.isNaN(date.getTime())) throw new PackageError(`packaging/deb/changelog: '${trailer[1]}' is not an RFC 2822 date (date -R prints one)`);
      entries.push({ version, date });
      version = null;
    }
  }
  return entries;
}

function readInputs(env: NodeJS.ProcessEnv): Inputs {
  if (!existsSync(BUNDLE) || !existsSync(METAFILE)) throw new PackageError(`${BUNDLE} or its metafile is missing: run 'npm run build' (npm run package does)`);
  const version = (JSON.parse(readText(join(ROOT, 'package.json'))) as { version: string }).version;
  const changelog = parseChangelog(readText(join(DEB_DIR, 'changelog')));
  const newest = changelog[0];
  if (!newest) throw new PackageError('packaging/deb/changelog has no entry: add one for this version');
  if (newest.version !== version) {
    throw new PackageError(`packaging/deb/changelog's newest entry is ${newest.version} but package.json says ${version}: add a changelog entry for ${version}`);
  }
  const bundleVersion = execFileSync(process.execPath, [BUNDLE, '--version'], { encoding: 'utf8' }).trim();
  if (bundleVersion !== `stiefelctl ${version}`) {
    throw new PackageError(`the bundle says '${bundleVersion}' but package.json says ${version}: set VERSION in src/version.ts to ${version} and run 'npm run build'`);
  }
  const maintainer = /^Maintainer: (.+)$/m.exec(readText(join(DEB_DIR, 'control')))?.[1];
  if (!maintainer) throw new PackageError('packaging/deb/control has no Maintainer: line');
  let epoch = Math.floor(newest.date.getTime() / 1000);
  if (env.SOURCE_DATE_EPOCH !== undefined) {
    if (!/^\d+$/.test(env.SOURCE_DATE_EPOCH)) throw new PackageError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, not '${env.SOURCE_DATE_EPOCH}'`);
    epoch = Number(env.SOURCE_DATE_EPOCH);
  }
  return { version, maintainer, epoch, changelog };
}

// --- documentation --------------------------------------------------------

/** gzip -9n: no file name, no time stamp (lintian wants both, and reproducibility). */
const gzip = (data: Buffer | string) => gzipSync(data, { level: 9 });

/** Text for the roff no-fill block of a man page: backslashes, leading dots and hyphens escaped. */
function roffLiteral(text: string): string {
  return text
    .replace(/\s+$/, '')
    .split('\n')
    .map((line) => line.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/, '\\&$1'))
    .join('\n');
}

function roffText(text: string): string {
  return text.replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');
}

interface CommandHelp {
  name: string;
  summary: string;
  help: string;
}

/** Every command's --help text, as the bundle prints it (its main --help lists them). */
function commandHelps(): CommandHelp[] {
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new PackageError(`stiefelctl ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const main = run(['--help']);
  const block = /\nCommands:\n((?: {2}\S+ +\S.*\n)+)/.exec(main)?.[1];
  if (!block) throw new PackageError("stiefelctl --help lists no 'Commands:': the man page is made from that list");
  return block
    .trimEnd()
    .split('\n')
    .map((line) => {
      const [, name, summary] = /^ {2}(\S+) +(.*)$/.exec(line)!;
      return { name: name!, summary: summary!, help: run([name!, '--help']) };
    });
}

function manPage(inputs: Inputs): string {
  const date = new Date(inputs.epoch * 1000).toISOString().slice(0, 10);
  const commands = commandHelps();
  const out = [
    `.TH STIEFELCTL 8 ${date} "stiefelsystem ${inputs.version}" "System Administration"`,
    '.SH NAME',
    'stiefelctl \\- boot the Linux installed on a laptop on a desktop over one network cable',
    '.SH SYNOPSIS',
    '.B stiefelctl',
    '.I COMMAND',
    '.RI [ OPTIONS ]',
    '.br',
    '.B stiefelctl',
    '.BR \\-\\-help " | " \\-\\-version',
    '.SH DESCRIPTION',
    roffText(
      'stiefelctl boots the operating system installed on one computer (the laptop) on another (the desktop) over a network cable, ' +
        'as if the laptop\'s disk had been moved into it. The laptop serves its disk over NBD through WireGuard and its kernel and ' +
        'initramfs over TLS-PSK; the desktop boots them, and the laptop OS\'s own initramfs mounts its root over the cable.',
    ),
    '.PP',
    roffText('Each command below is shown with the text its --help option prints.'),
    '.SH COMMANDS',
  ];
  for (const c of commands) {
    out.push(`.SS "${c.name}"`, roffText(`${c.summary}.`), '.PP', '.nf', roffLiteral(c.help), '.fi');
  }
  out.push(
    '.SH ENVIRONMENT',
    '.TP',
    '.B STIEFEL_CONFIG',
    roffText('The config file when --config is not given (default /etc/stiefelsystem/config.yaml).'),
    '.TP',
    '.B STIEFEL_DEBUG',
    roffText('Debug output on stderr for these subsystems, comma-separated (nbd,discovery,...), or * for all.'),
    '.SH FILES',
    '.TP',
    '.I /etc/stiefelsystem/',
    roffText('The config and the shared secret (stiefelctl init).'),
    '.TP',
    '.I /var/lib/stiefelsystem/',
    roffText('stiefelOS images built on this machine (stiefelctl build-image).'),
    '.TP',
    '.I /boot/stiefelsystem-os.json',
    roffText('The record stiefelctl setup-server-os leaves for the server role; removing the package undoes the setup when it is there.'),
    '.SH SEE ALSO',
    roffText(`${DOC_DIR}/README.md.gz`),
    '',
  );
  return out.join('\n');
}

// --- copyright --------------------------------------------------------------

/** SPDX identifiers of bundled npm packages, as the DEP-5 format names them. */
const DEP5_LICENSE: Record<string, string> = {
  'ISC': 'ISC',
  'MIT': 'Expat',
  '0BSD': '0BSD',
  'BSD-2-Clause': 'BSD-2-clause',
  'BSD-3-Clause': 'BSD-3-clause',
  'Apache-2.0': 'Apache-2.0',
};
/** Licenses Debian ships in /usr/share/common-licenses: referred to, not copied. */
const COMMON_LICENSES = new Set(['Apache-2.0']);

interface BundledPackage {
  name: string;
  /** Relative to the checkout, e.g. node_modules/yaml. */
  dir: string;
  version: string;
  license: string;
  copyright: string[];
  /** The license text without its copyright lines. */
  licenseText: string | null;
  homepage: string | null;
}

/** The npm packages esbuild put into the bundle (their directories), from its metafile's inputs. */
export function bundledPackageDirs(metafile: { inputs: Record<string, unknown> }): string[] {
  const dirs = new Set<string>();
  for (const input of Object.keys(metafile.inputs)) {
    const at = input.lastIndexOf('node_modules/');
    if (at < 0) continue;
    const [scope, name] = input.slice(at + 'node_modules/'.length).split('/');
    dirs.add(`${input.slice(0, at)}node_modules/${scope!.startsWith('@') ? `${scope}/${name}` : scope}`);
  }
  return [...dirs].sort();
}

function readBundledPackage(relativeDir: string): BundledPackage {
  const dir = join(ROOT, relativeDir);
  const pkg = JSON.parse(readText(join(dir, 'package.json'))) as {
    name: string;
    version: string;
    license?: unknown;
    author?: string | { name?: string; email?: string };
    homepage?: string;
  };
  const name = pkg.name;
  if (typeof pkg.license !== 'string') throw new PackageError(`${relativeDir}/package.json has no license string: its copyright cannot be written`);
  const licenseFile = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
  const text = licenseFile ? readText(join(dir, licenseFile)) : null;
  const copyright = (text ?? '')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(copyright\b|\(c\)|©)/i.test(l))
    .map((l) => l.replace(/^copyright\s*(\(c\)|©)?\s*/i, '').trim());
  if (copyright.length === 0 && pkg.author) {
    copyright.push(typeof pkg.author === 'string' ? pkg.author : `${pkg.author.name ?? ''}${pkg.author.email ? ` <${pkg.author.email}>` : ''}`.trim());
  }
  if (copyright.length === 0) throw new PackageError(`${relativeDir} names no copyright holder (no LICENSE line, no author)`);
  const licenseText = text === null ? null : text.split('\n').filter((l) => !/^\s*(copyright\b|\(c\)|©)/i.test(l)).join('\n').trim();
  return { name, dir: relativeDir, version: pkg.version, license: pkg.license, copyright, licenseText, homepage: pkg.homepage ?? null };
}

/** A text as a DEP-5 field continuation: one space in front, empty lines as ' .'. */
function dep5Block(text: string): string {
  return text
    .trim()
    .split('\n')
    .map((l) => (l.trim() === '' ? ' .' : ` ${l.trimEnd()}`))
    .join('\n');
}

function copyrightFile(inputs: Inputs): string {
  const meta = JSON.parse(readText(METAFILE)) as { inputs: Record<string, unknown> };
  const packages = bundledPackageDirs(meta).map(readBundledPackage);
  const years = [...new Set(inputs.changelog.map((e) => e.date.getUTCFullYear()))].sort();
  const yearText = years.length > 1 ? `${years[0]}-${years.at(-1)}` : String(years[0]);
  const files: string[] = [];
  const licenses = new Map<string, string>();
  for (const p of packages) {
    const dep5 = DEP5_LICENSE[p.license];
    if (!dep5) throw new PackageError(`the bundled npm package ${p.name} is under '${p.license}', which DEP5_LICENSE in scripts/package.ts does not name yet: add its DEP-5 name`);
    files.push(
      [
        `Files: ${p.dir}/*`,
        `Copyright: ${p.copyright.join('\n ')}`,
        `License: ${dep5}`,
        `Comment: npm package ${p.name} ${p.version}${p.homepage ? ` (${p.homepage})` : ''}, bundled into /usr/lib/${PACKAGE}/stiefelctl.js.`,
      ].join('\n'),
    );
    if (licenses.has(dep5)) continue;
    if (COMMON_LICENSES.has(dep5)) {
      licenses.set(dep5, `License: ${dep5}\n On Debian systems, the complete text of this license can be found in\n '/usr/share/common-licenses/${dep5}'.`);
    } else {
      if (!p.licenseText) throw new PackageError(`${p.dir} has no LICENSE file, and the copyright file must hold the ${dep5} text`);
      licenses.set(dep5, `License: ${dep5}\n${dep5Block(p.licenseText)}`);
    }
  }
  const bundled = [...files, ...licenses.values()].map((p) => `${p}\n\n`).join('');
  return readText(join(DEB_DIR, 'copyright.in'))
    .replace('@MAINTAINER@', inputs.maintainer)
    .replace('@YEARS@', yearText)
    .replace('@BUNDLED@\n', bundled);
}

// --- the package ----------------------------------------------------------

/**
 * Every file the package installs. The initramfs adapters and the attach
 * script are byte for byte (and mode for mode) what setup-server-os writes,
 * so its plan finds nothing to change where the two share a path.
 */
function packageFiles(inputs: Inputs): PackageFile[] {
  return [
    { path: '/usr/bin/stiefelctl', mode: EXEC, data: read(join(DEB_DIR, 'stiefelctl')) },
    // Executable as in dist/: its first line is a #! line, and lintian wants such files executable.
    { path: `/usr/lib/${PACKAGE}/stiefelctl.js`, mode: EXEC, data: read(BUNDLE) },
    { path: ATTACH_PATH, mode: EXEC, data: asset('server-os/stiefel-attach.sh') },
    { path: RECONNECT_PATH, mode: EXEC, data: asset('server-os/stiefel-nbd-reconnect') },
    { path: '/usr/share/initramfs-tools/hooks/stiefelsystem', mode: EXEC, data: asset('server-os/initramfs-tools/hook') },
    { path: '/usr/share/initramfs-tools/scripts/local-top/stiefelsystem', mode: EXEC, data: asset('server-os/initramfs-tools/local-top') },
    { path: '/usr/lib/dracut/modules.d/90stiefelsystem/module-setup.sh', mode: EXEC, data: asset('server-os/dracut/module-setup.sh') },
    { path: '/usr/lib/dracut/modules.d/90stiefelsystem/stiefel-cmdline.sh', mode: EXEC, data: asset('server-os/dracut/stiefel-cmdline.sh') },
    { path: '/lib/systemd/system/stiefel-autokexec.service', mode: TEXT, data: asset('laptop/stiefel-autokexec.service') },
    { path: '/lib/systemd/system/stiefel-laptop-watch.service', mode: TEXT, data: asset('laptop/stiefel-laptop-watch.service') },
    { path: '/lib/systemd/system/stiefel-nbd-reconnect.service', mode: TEXT, data: asset('laptop/stiefel-nbd-reconnect.service') },
    { path: `${DOC_DIR}/copyright`, mode: TEXT, data: Buffer.from(copyrightFile(inputs)) },
    // A native package (its version has no Debian revision): policy 12.7 names its one changelog changelog.gz.
    { path: `${DOC_DIR}/changelog.gz`, mode: TEXT, data: gzip(read(join(DEB_DIR, 'changelog'))) },
    { path: `${DOC_DIR}/README.md.gz`, mode: TEXT, data: gzip(read(join(ROOT, 'README.md'))) },
    { path: '/usr/share/man/man8/stiefelctl.8.gz', mode: TEXT, data: gzip(manPage(inputs)) },
  ];
}

/** Every directory above the files, parents first. */
function directories(files: readonly PackageFile[]): string[] {
  const dirs = new Set<string>();
  for (const f of files) {
    for (let d = posix.dirname(f.path); d !== '/'; d = posix.dirname(d)) dirs.add(d);
  }
  return [...dirs].sort();
}

/** Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, and one per directory. */
function installedSize(files: readonly PackageFile[]): number {
  return files.reduce((sum, f) => sum + Math.ceil(f.data.length / 1024), 0) + directories(files).length;
}

function controlFile(inputs: Inputs, files: readonly PackageFile[]): string {
  const text = readText(join(DEB_DIR, 'control'))
    .replace('@VERSION@', inputs.version)
    .replace('@INSTALLED_SIZE@', String(installedSize(files)));
  const left = /@[A-Z_]+@/.exec(text);
  if (left) throw new PackageError(`packaging/deb/control: ${left[0]} is not filled in by scripts/package.ts`);
  return text;
}

function md5sums(files: readonly PackageFile[]): string {
  return [...files]
    .sort((a, b) => (a.path < b.path ? -1 : 1))
    .map((f) => `${createHash('md5').update(f.data).digest('hex')}  ${f.path.slice(1)}\n`)
    .join('');
}

function writeTree(stage: string, inputs: Inputs): number {
  const files = packageFiles(inputs);
  mkdirSync(stage);
  chmodSync(stage, 0o755);
  for (const d of directories(files)) {
    mkdirSync(join(stage, d), { recursive: true });
    chmodSync(join(stage, d), 0o755);
  }
  for (const f of files) {
    writeFileSync(join(stage, f.path), f.data);
    chmodSync(join(stage, f.path), f.mode);
  }
  const control = join(stage, 'DEBIAN');
  mkdirSync(control);
  chmodSync(control, 0o755);
  const meta: Array<[string, string | Buffer, number]> = [
    ['control', controlFile(inputs, files), TEXT],
    ['md5sums', md5sums(files), TEXT],
    ['triggers', read(join(DEB_DIR, 'triggers')), TEXT],
    ['postinst', read(join(DEB_DIR, 'postinst')), EXEC],
    ['prerm', read(join(DEB_DIR, 'prerm')), EXEC],
    ['postrm', read(join(DEB_DIR, 'postrm')), EXEC],
  ];
  for (const [name, data, mode] of meta) {
    writeFileSync(join(control, name), data);
    chmodSync(join(control, name), mode);
  }
  return files.length;
}

function dpkgDeb(stage: string, out: string, epoch: number): void {
  const r = spawnSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, out], {
    encoding: 'utf8',
    env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') throw new PackageError("dpkg-deb is not installed: install Debian's 'dpkg' package");
  if (r.status !== 0) throw new PackageError(`dpkg-deb failed: ${(r.stderr || r.stdout).trim()}`);
}

function main(): void {
  const { out } = parseArgs(process.argv.slice(2));
  const inputs = readInputs(process.env);
  mkdirSync(out, { recursive: true });
  if (!statSync(out).isDirectory()) usage(`--out ${out} is not a directory`);
  const deb = join(out, `${PACKAGE}_${inputs.version}_all.deb`);
  const stage = mkdtempSync(join(tmpdir(), 'stf-deb-'));
  const tmp = join(dirname(deb), `.${PACKAGE}.deb.tmp-${process.pid}`);
  try {
    const count = writeTree(join(stage, 'root'), inputs);
    dpkgDeb(join(stage, 'root'), tmp, inputs.epoch);
    renameSync(tmp, deb);
    const data = read(deb);
    process.stdout.write(
      `${deb}\n  ${count} files, ${(data.length / 1024).toFixed(0)} KiB, sha256 ${createHash('sha256').update(data).digest('hex')}\n`,
    );
  } finally {
    rmSync(stage, { recursive: true, force: true });
    rmSync(tmp, { force: true });
  }
}

if (require.main === module) {
  try {
    main();
  } catch (err) {
    if (!(err instanceof PackageError)) throw err;
    process.stderr.write(`package: ${err.message}\n`);
    process.exitCode = 1;
  }
}
