// The laptop's HTTP server for desktops that PXE-boot: the iPXE script, the
// stiefelOS it loads (a kernel and an initrd that carry no secret), and the
// pairing exchange. Plain HTTP: iPXE's firmware builds speak nothing else,
// nothing served here is secret, and the pairing protects itself (a PAKE).
import { createReadStream, promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { networkInterfaces } from 'node:os';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../log';
import { readCappedBody } from '../payload/body';
import {
  decodeConfirmRequest,
  decodeStartRequest,
  encodeConfirmResponse,
  encodeStartResponse,
  MAX_PAIRING_BODY,
  PairingFormatError,
  PAIRING_PATHS,
} from '../payload/pairing';
import { busyMessage, peerHost, type ClientLock } from './client-lock';
import { PairingRefused, type PairingDesk } from './pairing-desk';

export const PXE_PATHS = Object.freeze({
  script: '/pxe/boot.ipxe',
  kernel: '/pxe/vmlinuz',
  initrd: '/pxe/initrd.img',
});

export interface PxeHttpOptions {
  port: number;
  /** The stiefelOS served (checked to carry no secret before it gets here). */
  image: { vmlinuz: string; initrd: string };
  desk: PairingDesk;
  lock: ClientLock;
  serverName: string;
  payloadPort: number;
  /** Words for the served kernel's command line (its consoles). */
  cmdline: string;
  /** Where the addresses of an interface come from (tests pass their own). */
  interfaces?: typeof networkInterfaces;
}

export interface PxeHttpServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * The iPXE script: stiefelOS from this server, told where to pair: the
 * laptop's link-local address on the link it asked on, which stays the same
 * after iPXE hands over (the desktop's IPv4 lease does not).
 */
export function ipxeScript(o: { base: string; pair: string; serverName: string; cmdline: string }): string {
  return [
    '#!ipxe',
    `echo stiefelsystem: loading stiefelOS from the laptop '${o.serverName}'`,
    // The 2019 EFI build of iPXE needs the initrd named on the kernel's line.
    `kernel ${o.base}${PXE_PATHS.kernel} initrd=initrd.img stiefel.role=client stiefel.pair=${o.pair} ${o.cmdline}`.trimEnd(),
    `initrd --name initrd.img ${o.base}${PXE_PATHS.initrd}`,
    'boot',
    '',
  ].join('\n');
}

/** The link-local IPv6 address of the interface that holds `local` (an address the request came in on). */
export function linkLocalOf(local: string, interfaces: ReturnType<typeof networkInterfaces>): string | undefined {
  const address = peerHost(local);
  if (/^fe80:/i.test(address)) return address.replace(/%.*$/, '');
  for (const addrs of Object.values(interfaces)) {
    if (!addrs?.some((a) => a.address === address)) continue;
    const ll = addrs.find((a) => a.family === 'IPv6' && /^fe80:/i.test(a.address));
    if (ll) return ll.address.replace(/%.*$/, '');
  }
  return undefined;
}

class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

export async function startPxeHttp(o: PxeHttpOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<PxeHttpServer> {
  const { log } = ctx;
  const interfaces = o.interfaces ?? networkInterfaces;
  let listening = o.port;

  const readJson = (req: IncomingMessage): Promise<string> =>
    readCappedBody(req, MAX_PAIRING_BODY, () => new HttpRefusal(413, 'E_REQUEST', 'pairing requests are small')).then((b) => b.toString('utf8'));

  const notBusy = (host: string): void => {
    const owner = o.lock.owner();
    if (owner && o.lock.busyFor(host)) throw new HttpRefusal(409, 'E_SERVER_BUSY', busyMessage(owner));
  };

  const serveFile = async (res: ServerResponse, path: string, host: string): Promise<void> => {
    const st = await fs.stat(path);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
    const t0 = Date.now();
    await pipeline(createReadStream(path), res);
    log.debug(`sent ${path} (${(st.size / 1e6).toFixed(1)} MB) to ${host} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const host = peerHost(req.socket.remoteAddress);
    const path = new URL(req.url ?? '/', 'http://stiefelsystem').pathname;
    const method = req.method ?? 'GET';
    if (method === 'GET' && path === PXE_PATHS.script) {
      const local = peerHost(req.socket.localAddress);
      const pair = linkLocalOf(local, interfaces());
      if (!pair) throw new HttpRefusal(503, 'E_NETIF', `no link-local IPv6 address on the interface of ${local}: the desktop could not pair`);
      const base = `http://${local.includes(':') ? `[${local}]` : local}:${listening}`;
      send(res, 200, 'text/plain', ipxeScript({ base, pair: `[${pair}]:${listening}`, serverName: o.serverName, cmdline: o.cmdline }));
      log.info(`a desktop at ${host} PXE-boots: sending it stiefelOS`);
      return;
    }
    if (method === 'GET' && path === PXE_PATHS.kernel) return serveFile(res, o.image.vmlinuz, host);
    if (method === 'GET' && path === PXE_PATHS.initrd) return serveFile(res, o.image.initrd, host);
    if (method === 'POST' && path === PAIRING_PATHS.start) {
      notBusy(host);
      const r = decodeStartRequest(await readJson(req));
      const { attempt, message } = o.desk.start(r, host);
      log.info(`the desktop '${r.name}' at ${host} asks to pair`);
      send(res, 200, 'application/json', encodeStartResponse({ attempt, message, serverName: o.serverName, payloadPort: o.payloadPort }));
      return;
    }
    if (method === 'POST' && path === PAIRING_PATHS.confirm) {
      notBusy(host);
      const r = decodeConfirmRequest(await readJson(req));
      try {
        const paired = o.desk.confirm(r, host);
        log.info(`the desktop '${paired.name}' at ${host} paired with the code`);
        send(res, 200, 'application/json', encodeConfirmResponse(paired));
      } catch (err) {
        if (err instanceof PairingRefused) log.warn(`the desktop at ${host} did not pair: ${err.message}`);
        throw err;
      }
      return;
    }
    throw new HttpRefusal(404, 'E_NOT_FOUND', `no such request: ${method} ${path}`);
  };

  const server: Server = createServer({ requestTimeout: 60_000, headersTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpRefusal || err instanceof PairingRefused) return send(res, err.status, 'application/json', JSON.stringify({ code: err.code, message: err.message }));
      if (err instanceof PairingFormatError) return send(res, 400, 'application/json', JSON.stringify({ code: 'E_REQUEST', message: `malformed pairing request: ${err.message}` }));
      log.warn(`PXE request ${req.method} ${req.url} failed: ${err instanceof Error ? err.message : String(err)}`);
      send(res, 500, 'application/json', JSON.stringify({ code: 'E_INTERNAL', message: 'internal error on the laptop; see its log' }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: o.port, host: '::' }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.warn(`PXE HTTP server error: ${err.message}`));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  listening = port;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  ctx.signal.addEventListener('abort', () => void close(), { once: true });
  return { port, close };
}
