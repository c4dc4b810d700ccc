// The laptop OS on the desktop says goodbye as the very last step of its
// shutdown (assets/server-os/system-shutdown): one line on a TCP connection
// to the laptop's disk address, with the per-boot token the laptop handed
// out in the manifest (carried to the laptop OS only in the secrets cpio).
// Only a goodbye with the right token counts: at the TCP level a pulled
// cable looks just like a desktop that powered off.
//
//   desktop -> laptop   STIEFEL-GOODBYE 1 TOKEN VERB\n   (VERB: poweroff, reboot, halt, kexec)
//   laptop -> desktop   OK\n  |  NO\n
//
// With the same token, while it is valid, the laptop OS on the desktop asks
// what the laptop serves (`stiefelctl laptop-watch`, `stiefelctl status`
// there): its battery above all.
//
//   desktop -> laptop   STIEFEL-STATUS 1 TOKEN\n
//   laptop -> desktop   OK JSON\n  |  NO\n            (JSON: a ServerStatus, one line)
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { unmapIPv4 } from '../netif/address';
import type { GoodbyeLink } from '../payload/manifest';
import { WarningLimiter } from '../warning-limiter';

const LINE = /^STIEFEL-GOODBYE 1 ([0-9a-f]{64}) (poweroff|reboot|halt|kexec)$/;
const STATUS_LINE = /^STIEFEL-STATUS 1 ([0-9a-f]{64})$/;
const MAX_LINE = 200;
const MAX_CONNECTIONS = 8;
const READ_TIMEOUT_MS = 5_000;

export interface Goodbye {
  host: string;
  verb: 'poweroff' | 'reboot' | 'halt' | 'kexec';
}

export interface GoodbyeListener {
  readonly port: number;
  /** A new token for the desktop at `host` (replacing its earlier one), for the manifest. */
  issue(host: string): GoodbyeLink;
  close(): Promise<void>;
}

export async function startGoodbyeListener(
  options: {
    port: number;
    host?: string;
    onGoodbye: (g: Goodbye) => void;
    /** What STIEFEL-STATUS answers (one object, sent as JSON); without it the request is refused. */
    status?: () => object | undefined;
  },
  ctx: { log: Logger; signal?: AbortSignal },
): Promise<GoodbyeListener> {
  const log = ctx.log;
  const tokens = new Map<string, Buffer>();
  const warnings = new WarningLimiter();
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    if (sockets.size >= MAX_CONNECTIONS) return void socket.destroy();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setTimeout(READ_TIMEOUT_MS, () => socket.destroy());
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      if (text.length > MAX_LINE) return void socket.destroy();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      const from = unmapIPv4(socket.remoteAddress ?? '?');
      const line = text.slice(0, nl);
      const asked = STATUS_LINE.exec(line);
      const m = asked ?? LINE.exec(line);
      const given = m ? Buffer.from(m[1]!, 'hex') : undefined;
      const host = given ? [...tokens].find(([, t]) => timingSafeEqual(t, given))?.[0] : undefined;
      if (asked && host !== undefined) {
        const status = options.status?.();
        socket.end(status ? `OK ${JSON.stringify(status)}\n` : 'NO\n');
        return;
      }
      if (!m || host === undefined) {
        const what = asked ? 'a status request' : 'a goodbye';
        for (const l of warnings.lines(`goodbye ${from}`, `refused ${what} from ${from}: ${m ? 'not the token of this boot' : 'malformed'}`)) log.warn(l);
        socket.end('NO\n');
        return;
      }
      socket.end('OK\n');
      tokens.delete(host);
      options.onGoodbye({ host, verb: m[2] as Goodbye['verb'] });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new StiefelError('E_GOODBYE_LISTEN', `cannot listen for the desktop's goodbye on TCP port ${options.port}: ${err.message}`, { cause: err })),
    );
    server.listen({ port: options.port, host: options.host ?? '::' }, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }));
  ctx.signal?.addEventListener('abort', () => void close(), { once: true });
  return {
    port,
    issue(host) {
      const token = randomBytes(32);
      tokens.set(host, token);
      return { token: token.toString('hex'), port };
    },
    close,
  };
}
