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
  close(): Promise<void>;
}

export async function startPxeRole(
  o: { image: PxeImage; validMs: number; httpPort: number; lock: ClientLock; serverName: string; payloadPort: number; desk?: PairingDesk },
  ctx: { log: Logger; signal: AbortSignal },
): Promise<PxeRole> {
  const desk = o.desk ?? new PairingDesk({ validMs: o.validMs, show: (code, reason, ms) => ctx.log.info(codeLine(code, reason, ms)) });
  const http = await startPxeHttp(
    { port: o.httpPort, image: o.image, desk, lock: o.lock, serverName: o.serverName, payloadPort: o.payloadPort, cmdline: DESKTOP_CONSOLES },
    ctx,
  );
  desk.open();
  return {
    desk,
    http,
    close: async () => {
      desk.close();
      await http.close();
    },
  };
}
