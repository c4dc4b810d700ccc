// The desktop's side, start to end: bring the interfaces up, find the laptop,
// fetch and verify the payload, build the laptop OS's command line, append
// the secrets cpio to its initrd, then either write everything to a
// directory or kexec it. Nothing reaches the directory or kexec unless every
// size and digest matched the signed manifest.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { StiefelError, errnoCode } from '../errors';
import type { Config } from '../config/schema';
import { deriveSubKeys } from '../crypto/keys';
import { findServer, type FoundServer } from '../discovery/finder';
import { buildLaptopCmdline } from '../cmdline/laptop-cmdline';
import type { Kexec } from '../kexec/kexec';
import type { Logger } from '../log';
import { watchInterfaces, type NetworkControl } from '../netif/interfaces';
import { fetchPayload, type FetchedPayload } from './payload-client';
import { initrdPadding } from '../cpio/newc';
import { encodeSecretsCpio, type LinkConf } from './link-conf';
import type { QuestionAnswerer } from '../payload/questions';
import { pairWithLaptop } from './pairing-client';

export const OUTPUT_NAMES = Object.freeze({ kernel: 'vmlinuz', initrd: 'initrd.img', cmdline: 'cmdline' });

export interface BootClientOptions {
  config: Config;
  /** The shared secret (a stick's stiefelOS, a desktop's own Linux); not with `pair`. */
  secret?: Buffer;
  /**
   * A stiefelOS that PXE-booted holds no secret: the laptop's address to
   * pair with (`stiefel.pair=[fe80::1]:4680`), asking this desktop's
   * terminal for the code on the laptop's console.
   */
  pair?: string;
  /** Gives up discovery after this long (E_DISCOVERY_TIMEOUT), sooner than config discovery.timeout_s says. */
  discoveryTimeoutMs?: number;
  /** Discovery alone ends with this signal too (a key pressed for the menu); the rest does not. */
  discoverySignal?: AbortSignal;
  /** Called once the laptop is found, before anything is fetched. */
  onFound?: (server: FoundServer) => void;
  /** Write vmlinuz, initrd.img and cmdline here instead of kexec'ing. */
  outDir?: string;
  /** Used when outDir is not given. */
  kexec: Kexec;
  /** Where the files wait for kexec (a fresh directory is made inside). */
  workDir: string;
  net: NetworkControl;
  clientName: string;
  answerer?: QuestionAnswerer;
  onProgress?: (p: { received: number; total: number }) => void;
  now?: () => number;
}

export interface BootClientResult {
  server: FoundServer;
  discoveryMs: number;
  /** From start to the payload verified, ms. */
  verifiedMs: number;
  bytes: number;
  cmdline: string;
  /** With outDir: the files written. */
  written?: { kernel: string; initrd: string; cmdline: string };
}

/** Aborts when either does (AbortSignal.any is not in Node 18, which runs on Debian 12). */
function eitherSignal(a: AbortSignal, b: AbortSignal): AbortSignal {
  const both = new AbortController();
  for (const s of [a, b]) {
    if (s.aborted) both.abort(s.reason);
    else s.addEventListener('abort', () => both.abort(s.reason), { once: true });
  }
  return both.signal;
}

/** The sooner of two timeouts, where 0 or undefined means none. */
function discoveryTimeout(configured: number, override: number | undefined): number {
  if (!override) return configured;
  return configured > 0 ? Math.min(configured, override) : override;
}

function stripZone(address: string): string {
  const pct = address.indexOf('%');
  return pct < 0 ? address : address.slice(0, pct);
}

export async function runBootClient(options: BootClientOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<BootClientResult> {
  const log = ctx.log;
  const now = options.now ?? Date.now;
  const started = now();
  const cfg = options.config;

  // 1. Links up, then ask on all of them at once (new ones join as they appear).
  const watcher = watchInterfaces(
    { interfaces: cfg.network.interfaces, exclude: cfg.network.exclude, intervalMs: cfg.network.watchIntervalMs },
    { log: log.child('netif'), signal: ctx.signal, net: options.net },
  );
  let server: FoundServer;
  let keys: { psk: Buffer; manifestKey: Buffer };
  let pskIdentity: string | undefined;
  try {
    await watcher.ready;
    if (options.pair !== undefined) {
      if (!options.answerer) throw new StiefelError('E_PAIR', 'pairing needs a terminal to type the code on');
      const paired = await pairWithLaptop(
        {
          laptop: options.pair,
          interfaces: () => [...watcher.up].sort(),
          net: options.net,
          clientName: options.clientName,
          answerer: options.answerer,
          timeoutMs: cfg.discovery.timeoutS * 1000,
          retryIntervalMs: cfg.discovery.retryIntervalMs,
        },
        { log: log.child('pairing'), signal: ctx.signal },
      );
      ({ server, keys } = paired);
      pskIdentity = paired.identity;
    } else {
      if (!options.secret) throw new StiefelError('E_CONFIG', 'no shared secret and no laptop to pair with');
      const sub = deriveSubKeys(options.secret);
      keys = { psk: sub.payloadPsk, manifestKey: sub.manifest };
      log.info(`looking for the laptop on ${watcher.up.size ? [...watcher.up].sort().join(', ') : '(no interface yet)'}`);
      server = await findServer(
        {
          key: sub.discovery,
          port: cfg.discovery.port,
          retryIntervalMs: cfg.discovery.retryIntervalMs,
          timeoutMs: discoveryTimeout(cfg.discovery.timeoutS * 1000, options.discoveryTimeoutMs),
          clientName: options.clientName,
          interfaces: () => [...watcher.up].sort(),
          ipv4Broadcast: cfg.discovery.ipv4Broadcast,
          net: options.net,
        },
        { log: log.child('discovery'), signal: options.discoverySignal ? eitherSignal(ctx.signal, options.discoverySignal) : ctx.signal },
      );
    }
  } finally {
    watcher.stop();
  }
  options.onFound?.(server);
  const discoveryMs = now() - started;
  log.info(
    `found the laptop '${server.serverName}' at ${server.address} on ${server.interface} after ${(discoveryMs / 1000).toFixed(2)} s${server.busy ? ' (it says it is busy)' : ''}`,
  );
  if (!server.mac) throw new StiefelError('E_NETIF', `cannot read the MAC address of ${server.interface}, which the laptop OS needs to find its link`);

  // 2. Where the files go: temporary names in the output directory, or a private work directory.
  let dir: string;
  let createdDir = false;
  if (options.outDir) {
    dir = options.outDir;
    try {
      await fs.mkdir(dir);
      createdDir = true;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw new StiefelError('E_OUTPUT', `cannot create the output directory ${dir}: ${(err as Error).message}`, { cause: err });
      const st = await fs.stat(dir);
      if (!st.isDirectory()) throw new StiefelError('E_OUTPUT', `${dir} is not a directory`);
    }
  } else {
    await fs.mkdir(options.workDir, { recursive: true });
    dir = await fs.mkdtemp(join(options.workDir, 'stiefel-payload-'));
    createdDir = true;
  }

  let fetched: FetchedPayload | undefined;
  const extra: string[] = [];
  try {
    fetched = await fetchPayload(
      {
        address: server.address,
        port: server.payloadPort,
        psk: keys.psk,
        pskIdentity,
        manifestKey: keys.manifestKey,
        dir,
        maxFileBytes: cfg.client.maxFileBytes,
        stallTimeoutMs: cfg.client.stallTimeoutS * 1000,
        answerer: options.answerer,
        onProgress: options.onProgress,
      },
      { log: log.child('payload'), signal: ctx.signal },
    );
    const verifiedMs = now() - started;
    const m = fetched.manifest;
    const downloadS = Math.max(1e-3, (verifiedMs - discoveryMs) / 1000);
    log.info(
      `payload verified: ${(fetched.bytes / 1e6).toFixed(1)} MB in ${downloadS.toFixed(2)} s (${formatRate(fetched.bytes / 1e6 / downloadS)} MB/s), ${(verifiedMs / 1000).toFixed(2)} s after start`,
    );

    // 3. What the laptop OS needs to find its disk.
    const serverAddress = stripZone(server.address);
    const wg = m.link.wireguard;
    const link: LinkConf = {
      mac: server.mac,
      interfaceName: cfg.client.linkInterface,
      serverAddress,
      nbdHost: wg ? wg.serverAddress : serverAddress,
      nbdPort: m.nbd.port,
      nbdExport: m.nbd.export,
      nbdBlockSize: m.nbd.blockSize,
      ...(m.nbd.connections !== undefined ? { nbdConnections: m.nbd.connections } : {}),
      wireguard: wg,
      goodbye: m.link.goodbye,
      ...(m.link.mtu !== undefined ? { mtu: m.link.mtu } : {}),
    };
    const cmdline = buildLaptopCmdline({
      base: m.cmdline,
      family: m.family,
      attach: m.attach,
      link: { mac: link.mac, interfaceName: link.interfaceName, serverAddress },
      nbd: { host: link.nbdHost, port: link.nbdPort, export: link.nbdExport },
    });
    if ((wg && (cmdline.includes(wg.clientPrivateKey) || cmdline.includes(wg.serverPublicKey))) || (m.link.goodbye && cmdline.includes(m.link.goodbye.token))) {
      throw new StiefelError('E_CMDLINE', 'internal error: a key ended up on the command line; refusing to boot');
    }
    const initrdSize = m.files.find((f) => f.name === 'initrd')!.size;
    await fs.appendFile(fetched.paths.initrd, Buffer.concat([initrdPadding(initrdSize), encodeSecretsCpio(link)]));
    const cmdlineTemp = join(dir, `.stiefel-cmdline.partial`);
    extra.push(cmdlineTemp);
    await fs.writeFile(cmdlineTemp, `${cmdline}\n`, { mode: 0o644, flag: 'wx' });

    const result: BootClientResult = { server, discoveryMs, verifiedMs, bytes: fetched.bytes, cmdline };
    if (options.outDir) {
      const written = {
        kernel: join(dir, OUTPUT_NAMES.kernel),
        initrd: join(dir, OUTPUT_NAMES.initrd),
        cmdline: join(dir, OUTPUT_NAMES.cmdline),
      };
      await fs.chmod(fetched.paths.kernel, 0o644);
      await fs.rename(fetched.paths.kernel, written.kernel);
      // The initrd now holds this boot's keys: root only.
      await fs.rename(fetched.paths.initrd, written.initrd);
      await fs.rename(cmdlineTemp, written.cmdline);
      log.info(`wrote ${written.kernel}, ${written.initrd} and ${written.cmdline}`);
      result.written = written;
      return result;
    }
    log.info('loading the laptop OS (kexec)');
    await options.kexec.load({ kernel: fetched.paths.kernel, initrd: fetched.paths.initrd, cmdline }, { log, signal: ctx.signal });
    log.info('starting the laptop OS');
    await options.kexec.exec({ log, signal: ctx.signal });
    return result;
  } catch (err) {
    await fetched?.discard();
    await Promise.all(extra.map((p) => fs.rm(p, { force: true })));
    // A directory we made goes again; an existing one keeps only what it had.
    if (createdDir && options.outDir) await fs.rmdir(dir).catch(() => undefined);
    else if (createdDir) await fs.rm(dir, { recursive: true, force: true });
    throw err;
  } finally {
    if (!options.outDir && fetched) {
      // kexec returned (a test double, or a failure): do not leave keys behind.
      await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

/** MB/s with a decimal where it matters: 1.4, 23, 169. */
function formatRate(mbPerS: number): string {
  return mbPerS < 10 ? mbPerS.toFixed(1) : mbPerS.toFixed(0);
}
