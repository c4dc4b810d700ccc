import { release as osRelease } from 'node:os';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { UsageError } from '../errors';
import { buildImage, DEFAULT_IMAGE_DIR } from '../image/build';
import { COMPRESSIONS, type Compression } from '../image/compress';
import { programSearchDirs } from '../image/programs';
import { createProgressDisplay } from '../image/progress';
import { formatSummary } from '../image/summary';
import { writeImageWithPxeCopy } from '../image/pxe-copy';

declare const STIEFEL_BUNDLED_ASSETS: Record<string, string> | undefined;

/** The bundle this code runs from, when it runs from dist/stiefelctl.js (esbuild defines the assets there). */
function runningBundle(): string | undefined {
  return typeof STIEFEL_BUNDLED_ASSETS !== 'undefined' ? __filename : undefined;
}

const help = `Usage: stiefelctl build-image [--out DIR] [--kernel PATH] [--modules-dir PATH]
                             [--compress zstd|gzip|none] [--config FILE] [--secret FILE] [OPTIONS]

Builds stiefelOS, the ramdisk system that runs on both machines, from this
host's kernel and programs: writes DIR/vmlinuz and DIR/initrd.img, then prints
what went in (kernel version, module count, size of each part, sha256).

Options:
  --out DIR            where to write vmlinuz and initrd.img
                       (default ${DEFAULT_IMAGE_DIR}; the config's image
                       directory once the config is wired in)
  --kernel PATH        kernel image (bzImage) to use; default: the running
                       kernel's /boot/vmlinuz-$(uname -r). Its release is read
                       from the image's boot header.
  --modules-dir PATH   its modules (default /lib/modules/RELEASE)
  --compress METHOD    zstd, gzip or none; default zstd when the kernel's config
                       says CONFIG_RD_ZSTD=y, else gzip
  --level N            compression level (default: zstd 9, gzip 6)
  --config FILE        embed FILE as /etc/stiefelsystem/config.yaml
  --secret FILE        embed FILE as /etc/stiefelsystem/secret (mode 0600)
  --pxe                also carry a copy of this image without config and
                       secret (written to DIR/pxe too), which the server role
                       serves to desktops that PXE-boot (config server.pxe)
  --add-module NAME    carry this module too (repeatable); it must exist
  --exclude-module X   leave out a module (a name) or every module below a
                       directory of the modules tree (a path with '/', e.g.
                       kernel/drivers/net/ethernet/mellanox/); repeatable.
                       Modules that others need stay.
  --add-program NAME   carry this program and its libraries too (repeatable)
  --bundle PATH        the bundled stiefelctl.js to carry (default: the one
                       running; required when not running from the bundle)
  --no-strip           carry node with its symbols (bigger image)
  --firmware-dir DIR   where module firmware is looked for (default /lib/firmware)
  --json               print the summary as JSON on stdout

Environment:
  SOURCE_DATE_EPOCH    time stamp of every file in the ramdisk (default 0);
                       two builds from the same inputs are byte-identical

Examples:
  stiefelctl build-image --out /tmp/stiefelos --config /etc/stiefelsystem/config.yaml \\
      --secret /etc/stiefelsystem/secret
  stiefelctl build-image --kernel /boot/vmlinuz-6.1.0-56-amd64 --compress gzip --out ./img
`;

export const buildImageCommand: Command = {
  name: 'build-image',
  summary: 'build stiefelOS (vmlinuz, initrd.img)',
  help,
  async run(argv, ctx) {
    const { values } = parseCommandArgs(
      'build-image',
      argv,
      {
        out: { type: 'string' },
        kernel: { type: 'string' },
        'modules-dir': { type: 'string' },
        compress: { type: 'string' },
        level: { type: 'string' },
        config: { type: 'string' },
        secret: { type: 'string' },
        'add-module': { type: 'string', multiple: true },
        'exclude-module': { type: 'string', multiple: true },
        'add-program': { type: 'string', multiple: true },
        bundle: { type: 'string' },
        'no-strip': { type: 'boolean' },
        'firmware-dir': { type: 'string' },
        json: { type: 'boolean' },
        pxe: { type: 'boolean' },
      },
      { min: 0, max: 0, names: '' },
    );
    const compress = values.compress;
    if (compress !== undefined && !COMPRESSIONS.includes(compress as Compression)) {
      throw new UsageError(`--compress must be one of ${COMPRESSIONS.join(', ')}, not '${compress}'`, { command: 'build-image' });
    }
    let level: number | undefined;
    if (values.level !== undefined) {
      if (!/^\d{1,2}$/.test(values.level)) throw new UsageError(`--level must be a number, not '${values.level}'`, { command: 'build-image' });
      level = Number(values.level);
      const max = compress === 'gzip' ? 9 : 22;
      if (level < 1 || level > max) throw new UsageError(`--level must be between 1 and ${max}`, { command: 'build-image' });
    }
    let sourceDateEpoch: number | undefined;
    const sde = ctx.env.SOURCE_DATE_EPOCH;
    if (sde !== undefined && sde !== '') {
      if (!/^\d{1,10}$/.test(sde) || Number(sde) > 0xffffffff) {
        throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds since 1970, not '${sde}'`, { command: 'build-image' });
      }
      sourceDateEpoch = Number(sde);
    }
    const bundle = values.bundle ?? runningBundle();
    if (bundle === undefined) {
      throw new UsageError('not running from the bundled stiefelctl.js: pass --bundle PATH (npm run build makes dist/stiefelctl.js)', {
        command: 'build-image',
      });
    }
    const abs = (p: string | undefined): string | undefined => (p === undefined ? undefined : resolve(ctx.cwd, p));
    const display = createProgressDisplay({ line: (t) => ctx.log.info(t), isTTY: ctx.isTTY });
    const outDir = abs(values.out) ?? DEFAULT_IMAGE_DIR;
    // With --pxe the image is built without config and secret into DIR/pxe,
    // and those two join it afterwards in a cpio of their own.
    const pxeDir = values.pxe ? join(outDir, 'pxe') : undefined;
    if (pxeDir) await mkdir(pxeDir, { recursive: true });
    const summary = await buildImage(
      {
        outDir: pxeDir ?? outDir,
        kernel: abs(values.kernel),
        runningRelease: osRelease(),
        modulesDir: abs(values['modules-dir']),
        compress: compress as Compression | undefined,
        compressLevel: level,
        node: process.execPath,
        bundle: abs(bundle)!,
        config: pxeDir ? undefined : abs(values.config),
        secret: pxeDir ? undefined : abs(values.secret),
        extraModules: values['add-module'],
        excludeModules: values['exclude-module'],
        extraPrograms: values['add-program'],
        searchDirs: programSearchDirs(ctx.env.PATH),
        sourceDateEpoch,
        strip: values['no-strip'] ? false : undefined,
        firmwareDir: abs(values['firmware-dir']),
      },
      { log: ctx.log.child('image'), signal: ctx.signal, progress: display.update },
    );
    if (pxeDir) {
      const written = await writeImageWithPxeCopy({ publicDir: pxeDir, outDir, config: abs(values.config), secret: abs(values.secret) });
      ctx.log.info(`${pxeDir}: the copy for PXE (no config, no secret); ${join(outDir, 'initrd.img')}: it, plus ${(written.privateBytes / 1e6).toFixed(1)} MB with the copy${values.config ? ', the config' : ''}${values.secret ? ' and the secret' : ''}`);
      summary.outDir = outDir;
      summary.initrd = { ...summary.initrd, path: join(outDir, 'initrd.img'), bytes: written.initrdBytes, sha256: written.sha256 };
      summary.kernel = { ...summary.kernel, path: join(outDir, 'vmlinuz') };
      summary.totalBytes = summary.kernel.bytes + written.initrdBytes;
      summary.config = abs(values.config);
      summary.secret = values.secret !== undefined;
    }
    ctx.stdout(values.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
    if (summary.secret) ctx.log.info(`${summary.initrd.path} holds the shared secret (mode 0600): whoever has a copy can reach the laptop's disk; keep it like a key`);
  },
};
