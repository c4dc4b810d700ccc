// `stiefelctl iso boot URL|FILE`: where the ISO comes from. A URL needs the
// network (DHCP on every link when there is no default route, as on the
// stick's stiefelOS) and is downloaded into RAM, checked, then booted; a
// file (another USB disk, a path on the desktop's own Linux) is checked
// when a SHA-256 is given and read where it is.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { posix, resolve } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { detectHandOff, kexecTools, type Kexec } from '../kexec/kexec';
import { systemRunner } from '../disk/runner';
import { systemNetworkControl, watchInterfaces, type InterfaceSelection } from '../netif/interfaces';
import { dhcpOnAnyLink } from '../netif/dhcp-client';
import { downloadIso } from '../iso/download';
import { ProgressReporter } from '../progress';
import { bootIso, chooseEntry, type IsoBootResult } from './iso-boot';
import { IsoDownloadError } from '../iso/download';
import { isClearSigned, parseSha256Sums, SIGNATURE_SUFFIXES, sumFor, verifySignedSums } from '../iso/signed-sums';
import { CA_BUNDLE, ISO_KEYRING } from '../image/build';
import { locateIsoFile, parseMountinfo, type IsoLocation } from '../iso/iso-on-disk';
import { choosePmemRegion, parseIomemRam, type PmemRegion } from '../iso/pmem';
import { openHttpIsoSource } from '../iso/http-source';
import type { OpenedIsoSource } from '../iso/file-source';
import { inspectIso, requireEntries, type IsoBootEntry } from '../iso/inspect';
import { liveRule } from '../iso/distro';
import { pmemDevice, pmemInitrd, restartWithRegion } from './iso-pmem';

/** stiefelOS's /init marks it; there the ISO goes to a tmpfs and kexec is direct. */
const STIEFELOS_RELEASE = '/etc/stiefelos/release';
/** What RAM must keep free besides the ISO: the kernel and initrd copied out, kexec, the ISO's own boot. */
const RAM_MARGIN = 384 * 1024 * 1024;

export interface IsoBootRequest {
  target: string;
  sha256?: string;
  /** A signed checksum list (URL or file) that gives the ISO's SHA-256; its signature is SUMS.sign, .gpg or .asc. */
  sums?: string;
  /** The public keys that may sign it (default ISO_KEYRING). */
  keyring?: string;
  entry?: number;
  outDir?: string;
  cwd: string;
  consoles: string;
  isTTY: boolean;
  /** Which links DHCP may use (config network.interfaces, network.exclude); every one by default. */
  network?: InterfaceSelection;
  /** The RAM set aside for the ISO (a restarted stiefelOS): downloaded into /dev/pmem0, kept there across kexec. */
  pmem?: PmemRegion;
}

/** The consoles this system runs on (console= of its command line), for the booted kernel. */
export async function runningConsoles(): Promise<string> {
  const text = await fs.readFile('/proc/cmdline', 'utf8').catch(() => '');
  return text.split(/\s+/).filter((w) => /^console=/.test(w)).join(' ');
}

async function memAvailable(): Promise<number> {
  const text = await fs.readFile('/proc/meminfo', 'utf8');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Room for the download: RAM in stiefelOS (a tmpfs), the file system's free space elsewhere. */
async function roomFor(dir: string, inStiefelOs: boolean): Promise<number> {
  const st = await fs.statfs(dir);
  const free = st.bavail * st.bsize;
  return inStiefelOs ? Math.max(0, Math.min(free, (await memAvailable()) - RAM_MARGIN)) : free;
}

async function hasDefaultRoute(): Promise<boolean> {
  const r = await systemRunner.run('ip', ['-4', 'route', 'show', 'default']);
  return r.code === 0 && r.stdout.trim() !== '';
}

/** Links up and an address from DHCP, unless this machine is on a network already. */
async function networkUp(selection: InterfaceSelection, log: Logger, signal: AbortSignal): Promise<void> {
  if (await hasDefaultRoute()) return;
  const net = systemNetworkControl();
  const watcher = watchInterfaces({ ...selection, intervalMs: 250 }, { log: log.child('netif'), signal, net });
  try {
    await watcher.ready;
    // A link that just came up needs a moment for carrier; udhcpc's tries cover it.
    await dhcpOnAnyLink({ interfaces: [...watcher.up].sort(), runner: systemRunner }, { log: log.child('dhcp') });
  } finally {
    watcher.stop();
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Where the booted kernel's initramfs can find the ISO file again; with the file system's UUID when blkid knows it. */
async function locationOf(iso: string): Promise<IsoLocation> {
  const mounts = parseMountinfo(await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
  const location = locateIsoFile(await fs.realpath(iso).catch(() => iso), mounts);
  if (!location.found) return location;
  const r = await systemRunner.run('blkid', ['-o', 'value', '-s', 'UUID', location.device]);
  const uuid = r.code === 0 ? r.stdout.trim() : '';
  return /^[0-9A-Za-z-]+$/.test(uuid) ? { ...location, byId: `/dev/disk/by-uuid/${uuid}` } : location;
}

/**
 * Before a download in stiefelOS: reads the ISO's menus over HTTP ranges;
 * when the entry to boot is a live system, restarts stiefelOS with RAM set
 * aside for it (never returns then). A server without ranges, or an ISO
 * that needs nothing, goes on to the download as before.
 */
async function restartIfLive(r: IsoBootRequest, ca: Buffer | undefined, kexec: Kexec, log: Logger, signal: AbortSignal): Promise<void> {
  let entry: IsoBootEntry;
  let size: number;
  let remote: OpenedIsoSource | undefined;
  try {
    remote = await openHttpIsoSource(r.target, { ...(ca ? { ca } : {}), signal });
    const inspection = await inspectIso(remote);
    entry = chooseEntry(requireEntries(inspection), r.entry, posix.basename(new URL(r.target).pathname));
    size = remote.size;
  } catch (err) {
    if (signal.aborted) throw err;
    log.info(`could not look into the ISO before its download (${(err as Error).message}); downloading it into RAM`);
    return;
  } finally {
    await remote?.close();
  }
  const rule = liveRule(entry.distro);
  if (!rule) return;
  const region = choosePmemRegion(parseIomemRam(await fs.readFile('/proc/iomem', 'utf8')), size);
  log.info(`entry ${entry.number} is ${rule.name}, which looks for its ISO again once it runs: the ISO stays in RAM across kexec (webboot's way)`);
  await restartWithRegion({ url: r.target, ...(r.sha256 ? { sha256: r.sha256 } : {}), entry: entry.number, region }, kexec, { log, runner: systemRunner, signal });
}

const isUrl = (t: string): boolean => /^https?:\/\//i.test(t);

/** A small file (a checksum list, a signature) from a URL into `dir`, or a local one as it is. */
async function fetchSmall(target: string, dir: string, cwd: string, ca: Buffer | undefined, log: Logger, signal: AbortSignal): Promise<string> {
  if (!isUrl(target)) {
    const path = resolve(cwd, target);
    await fs.access(path).catch(() => {
      throw new StiefelError('E_ISO_SUMS', `there is no ${path}`);
    });
    return path;
  }
  const name = posix.basename(new URL(target).pathname).replace(/[^A-Za-z0-9._-]/g, '_') || 'download';
  const dest = posix.join(dir, `sums-${name}`);
  await downloadIso({ url: target, ...(ca ? { ca } : {}), dest, maxBytes: 4 * 1024 * 1024, signal, retries: 2, signed: true }, { log: log.child('download') });
  return dest;
}

/** The first line of a file (at most 4 KiB read). */
async function readHead(path: string): Promise<string> {
  const fh = await fs.open(path, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * The ISO's SHA-256 from a signed checksum list: the list and its detached
 * signature fetched (SUMS.sign, .gpg, .asc: the first there is), or a list
 * clear-signed (Fedora's CHECKSUM), checked with gpgv against the keyring,
 * and the ISO's line read. Nothing is downloaded before this succeeds.
 */
async function sha256FromSignedSums(r: IsoBootRequest, isoName: string, workDir: string, ca: Buffer | undefined, log: Logger, signal: AbortSignal): Promise<string> {
  const keyring = resolve(r.cwd, r.keyring ?? ISO_KEYRING);
  if (!existsSync(keyring)) {
    throw new StiefelError('E_ISO_SUMS', `a signed checksum list is checked against a keyring, and there is no ${keyring}: give --keyring FILE (the distribution's signing key: gpg --export KEY > FILE)`);
  }
  const sums = await fetchSmall(r.sums!, workDir, r.cwd, ca, log, signal);
  const fetched = isUrl(r.sums!) ? [sums] : [];
  try {
    let signedText: string;
    let fingerprint: string;
    if (isClearSigned(await readHead(sums))) {
      // Fedora's CHECKSUM: the signature inside; only what it covers is read.
      const output = posix.join(workDir, `signed-${randomBytes(4).toString('hex')}`);
      try {
        ({ fingerprint } = await verifySignedSums({ sums, output, keyring, runner: systemRunner }));
        signedText = await fs.readFile(output, 'utf8');
      } finally {
        await fs.rm(output, { force: true });
      }
    } else {
      let signature: string | undefined;
      const tried: string[] = [];
      for (const suffix of SIGNATURE_SUFFIXES) {
        try {
          signature = await fetchSmall(`${r.sums}${suffix}`, workDir, r.cwd, ca, log, signal);
          break;
        } catch (err) {
          if (!(err instanceof IsoDownloadError || (err instanceof StiefelError && err.code === 'E_ISO_SUMS'))) throw err;
          tried.push(`${posix.basename(r.sums!)}${suffix}`);
        }
      }
      if (!signature) throw new StiefelError('E_ISO_SUMS', `no signature next to ${r.sums} (tried ${tried.join(', ')}; nor is it clear-signed): a checksum list without its signature proves nothing`);
      if (isUrl(r.sums!)) fetched.push(signature);
      ({ fingerprint } = await verifySignedSums({ sums, signature, keyring, runner: systemRunner }));
      signedText = await fs.readFile(sums, 'utf8');
    }
    const expected = sumFor(parseSha256Sums(signedText), isoName, posix.basename(r.sums!));
    if (r.sha256 !== undefined && r.sha256 !== expected) {
      throw new StiefelError('E_ISO_SHA256', `the --sha256 you gave (${r.sha256}) is not the one the signed list gives for ${isoName} (${expected}): nothing is booted`);
    }
    log.info(`${posix.basename(r.sums!)} is signed by ${fingerprint} (${posix.basename(keyring)}); it gives ${isoName} the SHA-256 ${expected}`);
    return expected;
  } finally {
    // The list and its signature were only needed for this (files given by path stay).
    for (const p of fetched) await fs.rm(p, { force: true });
  }
}

export async function runIsoBoot(request: IsoBootRequest, ctx: { log: Logger; signal: AbortSignal }): Promise<IsoBootResult> {
  const { log, signal } = ctx;
  const inStiefelOs = existsSync(STIEFELOS_RELEASE);
  const workDir = inStiefelOs ? '/run/stiefel-iso' : tmpdir();
  await fs.mkdir(workDir, { recursive: true, mode: 0o700 });
  const ca = await fs.readFile(CA_BUNDLE).catch(() => undefined);
  // stiefelOS brings its own network up; a desktop's own Linux has its network already.
  if (inStiefelOs && (isUrl(request.target) || (request.sums !== undefined && isUrl(request.sums)))) await networkUp(request.network ?? { interfaces: 'all', exclude: [] }, log, signal);
  const isoName = posix.basename(isUrl(request.target) ? (URL.canParse(request.target) ? new URL(request.target).pathname : request.target) : request.target);
  const r: IsoBootRequest = request.sums === undefined ? request : { ...request, sha256: await sha256FromSignedSums(request, isoName, workDir, ca, log, signal) };
  const kexec = kexecTools({ handOff: inStiefelOs ? 'direct' : await detectHandOff((p) => fs.access(p).then(() => true, () => false)), missingFix: '; or use --no-kexec --out DIR' });

  let iso: string;
  let downloaded = false;
  let location: IsoLocation = {
    found: false,
    why: inStiefelOs ? "it was downloaded into RAM (a tmpfs), where the ISO's kernel cannot see it" : 'it was downloaded to a temporary file, which is gone before that kernel starts (download it to a disk first and give its path)',
  };
  if (/^https?:\/\//i.test(r.target)) {
    let url: URL;
    try {
      url = new URL(r.target);
    } catch {
      throw new StiefelError('E_ISO_URL', `${r.target} is not a URL`);
    }
    if (url.protocol === 'http:' && r.sha256 === undefined) {
      throw new StiefelError('E_ISO_URL', 'an ISO over plain HTTP needs --sha256 HEX or a signed --sums (nothing else proves it is the one you meant)');
    }
    const name = posix.basename(url.pathname).replace(/[^A-Za-z0-9._-]/g, '_') || 'download.iso';
    // A live ISO in stiefelOS: restart with RAM set aside for it, then download it there.
    if (inStiefelOs && r.outDir === undefined && r.pmem === undefined) await restartIfLive(r, ca, kexec, log, signal);
    iso = r.pmem ? await pmemDevice(r.pmem, { log, runner: systemRunner, signal }) : posix.join(workDir, name);
    let progress: ProgressReporter | undefined;
    const got = await downloadIso(
      {
        url: r.target,
        ...(ca ? { ca } : {}),
        dest: iso,
        inPlace: r.pmem !== undefined,
        sha256: r.sha256,
        maxBytes: r.pmem ? r.pmem.size : await roomFor(workDir, inStiefelOs),
        signal,
        onProgress: ({ received, total }) => {
          progress ??= new ProgressReporter({ write: (line) => log.info(line), tty: r.isTTY, label: 'downloading' });
          progress.update(received, total ?? received);
        },
      },
      { log: log.child('download') },
    );
    downloaded = r.pmem === undefined;
    log.info(`downloaded ${name}${r.pmem ? ` into the RAM set aside (${iso})` : ''}: ${(got.bytes / 1e6).toFixed(1)} MB in ${got.seconds.toFixed(1)} s${got.resumed ? `, resumed ${got.resumed} times` : ''}; SHA-256 ${got.sha256}${r.sha256 ? ' (as given)' : ''}`);
  } else {
    iso = resolve(r.cwd, r.target);
    if (r.sha256 !== undefined) {
      const actual = await sha256OfFile(iso).catch((err: Error) => {
        throw new StiefelError('E_ISO_OPEN', `cannot read ${iso}: ${err.message}`, { cause: err });
      });
      if (actual !== r.sha256) throw new StiefelError('E_ISO_SHA256', `${iso} has SHA-256 ${actual}, not the ${r.sha256} you gave: nothing is booted`);
    }
    location = await locationOf(iso);
  }
  try {
    const region = r.pmem;
    const pmem = region && {
      region,
      initrd: (entry: IsoBootEntry, release: string) => pmemInitrd({ isoDevice: iso, distro: entry.distro, release, workDir: posix.join(workDir, 'pmem') }, { log, runner: systemRunner, signal }),
    };
    return await bootIso({ iso, ...(pmem ? { name: isoName, pmem } : {}), entry: r.entry, consoles: r.consoles, workDir, outDir: r.outDir, kexec, location }, ctx);
  } finally {
    // An ISO downloaded into RAM goes when it did not boot (or was only written out).
    if (downloaded) await fs.rm(iso, { force: true });
  }
}
