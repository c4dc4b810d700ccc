// The server role's PXE part: checks the stiefelOS it would serve (present,
// and carrying no secret), keeps the pairing code on the console, serves
// iPXE's script and files and the pairing over HTTP, and runs the boot
// services (DHCP or ProxyDHCP, TFTP) on every link as it comes up.
import { promises as fs } from 'node:fs';
import { posix } from 'node:path';
import { IMAGE_PATHS } from '../image/build';
import { readInitrdFacts } from '../usbdrive/stiefelos';
import { DESKTOP_CONSOLES } from '../cmdline/stiefelos-cmdline';
import type { Logger } from '../log';
import type { ClientLock } from './client-lock';
import { PairingDesk, type CodeReason } from './pairing-desk';
import { startPxeHttp, type PxeHttpServer } from './pxe-http';
import { startPxeServices, type PxeServices } from '../pxe/boot-services';
import type { Config } from '../config/schema';
import type { CommandRunner } from '../disk/runner';

export interface PxeImage {
  vmlinuz: string;
  initrd: string;
}

/**
 * The stiefelOS in `dir`, if it is there and safe to hand to anyone on the
 * cable; otherwise undefined, and one line says why and what to do.
 */
export async function findPxeImage(dir: string, log: Logger): Promise<PxeImage | undefined> {
  const image = { vmlinuz: posix.join(dir, 'vmlinuz'), initrd: posix.join(dir, 'initrd.img') };
  const present = await Promise.all([image.vmlinuz, image.initrd].map((p) => fs.stat(p).then((s) => s.isFile(), () => false)));
  if (!present.every(Boolean)) {
    log.info(`PXE is off: no stiefelOS to serve in ${dir} (build the laptop's stiefelOS with 'stiefelctl build-image --pxe', or set server.pxe.enabled: false)`);
    return undefined;
  }
  let facts;
  try {
    facts = await readInitrdFacts(image.initrd);
  } catch (err) {
    log.warn(`PXE is off: cannot read ${image.initrd}: ${(err as Error).message}`);
    return undefined;
  }
  if (facts.files.has(IMAGE_PATHS.secret.slice(1))) {
    log.warn(`PXE is off: ${image.initrd} carries a secret (${IMAGE_PATHS.secret}), and PXE hands it to anyone on the cable: serve one built without --secret ('stiefelctl build-image --pxe' makes it)`);
    return undefined;
  }
  return image;
}

/** The console's line for a new code. */
export function codeLine(code: string, reason: CodeReason, validMs: number): string {
  const why = { first: '', used: ' (the last one was used)', expired: ' (the last one expired)', wrong: ' (the last one was typed wrong 3 times)' }[reason];
  return `pairing code for a desktop that PXE-boots: ${code}${why}; valid ${Math.round(validMs / 60_000)} min, 3 tries`;
}

export interface PxeRole {
  readonly desk: PairingDesk;
  readonly http: PxeHttpServer;
  readonly services: PxeServices;
  close(): Promise<void>;
}

export interface PxeRoleOptions {
  image: PxeImage;
  pxe: Config['server']['pxe'];
  lock: ClientLock;
  serverName: string;
  payloadPort: number;
  /** The links up now, and a way to hear of each new one. */
  links: { up: ReadonlySet<string>; onUp(listener: (name: string) => void): void };
  /** The boot services' files (dnsmasq's configs, leases, the TFTP root). */
  runDir: string;
  runner?: CommandRunner;
}

export async function startPxeRole(o: PxeRoleOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<PxeRole> {
  const validMs = o.pxe.codeValidS * 1000;
  const desk = new PairingDesk({ validMs, show: (code, reason, ms) => ctx.log.info(codeLine(code, reason, ms)) });
  // First what the URLs name, then the code, then the services that hand the URLs out.
  const http = await startPxeHttp(
    { port: o.pxe.httpPort, image: o.image, desk, lock: o.lock, serverName: o.serverName, payloadPort: o.payloadPort, cmdline: DESKTOP_CONSOLES },
    ctx,
  );
  desk.open();
  let services: PxeServices;
  try {
    services = await startPxeServices({ pxe: o.pxe, runDir: o.runDir, ...(o.runner ? { runner: o.runner } : {}) }, { log: ctx.log.child('boot'), signal: ctx.signal });
  } catch (err) {
    desk.close();
    await http.close();
    throw err;
  }
  const add = (name: string): void => {
    void services.addLink(name).then((link) => {
      if (link) ctx.log.info(`PXE on ${link.interface}: ${link.mode === 'dhcp' ? `DHCP for PXE clients from ${link.address}` : `ProxyDHCP beside the DHCP server there, from ${link.address}`}, boot file ${link.bootUrl}`);
    });
  };
  for (const name of [...o.links.up].sort()) add(name);
  o.links.onUp(add);
  return {
    desk,
    http,
    services,
    close: async () => {
      desk.close();
      await services.close();
      await http.close();
    },
  };
}
