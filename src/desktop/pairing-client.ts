// The desktop's end of pairing, for a stiefelOS that PXE-booted and so holds
// no secret: find the laptop's link-local address (from the iPXE script) on
// one of our links, ask the person at the desktop for the code on the
// laptop's console, run the PAKE, and check that the laptop knew the code
// too. What comes out is this boot's payload keys; discovery is not needed,
// since the answer says where the laptop is.
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { connect } from 'node:net';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { NetworkControl } from '../netif/interfaces';
import { deriveKey } from '../crypto/keys';
import { confirmTag, desktopPairingStart, normalizePairingCode, pairedSecret, pairingTranscriptHash, verifyConfirmTag } from '../crypto/pairing-code';
import {
  decodeConfirmResponse,
  decodeStartResponse,
  encodeConfirmRequest,
  encodeStartRequest,
  MAX_PAIRING_BODY,
  PAIRING_PATHS,
  PAIRING_VERSION,
} from '../payload/pairing';
import type { QuestionAnswerer } from '../payload/questions';
import type { FoundServer } from '../discovery/finder';
import { newCounters } from '../discovery/responder';

export interface PairOptions {
  /** The laptop's link-local address and port, as `stiefel.pair=[fe80::1]:4680` says. */
  laptop: string;
  /** Our interfaces that are up now. */
  interfaces: () => readonly string[];
  net: NetworkControl;
  clientName: string;
  answerer: QuestionAnswerer;
  /** Gives up finding the laptop after this long. */
  timeoutMs: number;
  retryIntervalMs?: number;
}

export interface PairedLaptop {
  server: FoundServer;
  keys: { psk: Buffer; manifestKey: Buffer };
  identity: string;
}

/** `[fe80::1]:4680` -> address and port; undefined when it is not that. */
export function parsePairTarget(text: string): { address: string; port: number } | undefined {
  const m = /^\[(fe80:[0-9a-fA-F:]+)\]:(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { address: m[1]!.toLowerCase(), port } : undefined;
}

function reachable(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Which of our links the laptop answers on: tried on all of them, again until it does. */
async function findLaptop(o: PairOptions, address: string, port: number, signal: AbortSignal, log: Logger): Promise<string> {
  const deadline = Date.now() + o.timeoutMs;
  let said = false;
  for (;;) {
    signal.throwIfAborted();
    const names = o.interfaces();
    if (names.length && !said) {
      log.info(`looking for the laptop at ${address} on ${names.join(', ')} (it PXE-booted this desktop)`);
      said = true;
    }
    const answers = await Promise.all(names.map(async (name) => ((await reachable(`${address}%${name}`, port, 2000)) ? name : undefined)));
    const found = answers.find((n) => n !== undefined);
    if (found) return found;
    if (Date.now() >= deadline) {
      throw new StiefelError('E_NOT_FOUND', `the laptop at ${address} does not answer on ${names.join(', ') || 'any interface'} after ${Math.round(o.timeoutMs / 1000)} s: is the cable in, and does its console still show a pairing code?`);
    }
    await new Promise((r) => setTimeout(r, o.retryIntervalMs ?? 1000));
  }
}

function post(host: string, port: number, path: string, body: string, signal: AbortSignal): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, signal, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_PAIRING_BODY * 4) req.destroy(new Error('the answer is too long'));
        else chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end(body);
  });
}

/** The laptop's refusal: its own line when it sent one. */
function refusal(r: { status: number; text: string }): { code: string; message: string } {
  try {
    const o = JSON.parse(r.text) as { code?: unknown; message?: unknown };
    if (typeof o.code === 'string' && typeof o.message === 'string') return { code: o.code, message: o.message };
  } catch {
    // not the laptop's JSON
  }
  return { code: 'E_PAIR', message: `the laptop answered HTTP ${r.status}` };
}

/** Our host name as the laptop's console may show it: letters, digits, _ . - only. */
function shownName(name: string): string {
  return name.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64) || 'desktop';
}

export async function pairWithLaptop(o: PairOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<PairedLaptop> {
  const { log, signal } = ctx;
  const target = parsePairTarget(o.laptop);
  if (!target) throw new StiefelError('E_CMDLINE', `stiefel.pair=${o.laptop} is not [fe80::…]:PORT (the laptop's iPXE script writes it)`);
  const iface = await findLaptop(o, target.address, target.port, signal, log);
  const host = `${target.address}%${iface}`;
  log.info(`the laptop answers on ${iface}`);

  let prompt = "Pairing code shown on the laptop's console:";
  // Said in the log too: a serial console shows the log, not the prompt on the screen.
  log.info("asking for the pairing code the laptop's console shows");
  for (;;) {
    const typed = await o.answerer.answer({ id: randomBytes(8).toString('hex'), kind: 'text', prompt, fromLaptop: false }, { signal });
    const code = normalizePairingCode(typed);
    if (code === undefined) {
      prompt = "That is not a pairing code (6 digits, as the laptop's console shows). Pairing code:";
      continue;
    }
    const mine = desktopPairingStart({ code });
    const sid = Buffer.from(mine.sid);
    const desktopShare = Buffer.from(mine.message);
    const started = await post(host, target.port, PAIRING_PATHS.start, encodeStartRequest({ version: PAIRING_VERSION, sid, message: desktopShare, name: shownName(o.clientName) }), signal);
    if (started.status === 429) {
      // Too many wrong codes: the laptop pauses; the person waits and types the new code.
      log.warn(refusal(started).message);
      prompt = "Pairing code shown on the laptop's console (after the pause):";
      continue;
    }
    if (started.status !== 200) {
      const r = refusal(started);
      throw new StiefelError(r.code, `the laptop refused to pair: ${r.message}`);
    }
    const s = decodeStartResponse(started.text);
    const isk = mine.finish(s.message);
    const transcript = pairingTranscriptHash(sid, desktopShare, s.message, Buffer.from(s.attempt));
    const confirmed = await post(host, target.port, PAIRING_PATHS.confirm, encodeConfirmRequest({ attempt: s.attempt, tag: Buffer.from(confirmTag(isk, 'desktop', transcript)) }), signal);
    if (confirmed.status === 403) {
      const r = refusal(confirmed);
      log.warn(r.message);
      prompt = "Pairing code shown on the laptop's console:";
      continue;
    }
    if (confirmed.status !== 200) {
      const r = refusal(confirmed);
      throw new StiefelError(r.code, `the laptop refused to pair: ${r.message}`);
    }
    const c = decodeConfirmResponse(confirmed.text);
    if (!verifyConfirmTag(isk, 'laptop', transcript, c.tag)) {
      throw new StiefelError('E_PAIR', `the machine at ${host} did not prove it knows the code: it is not the laptop; nothing was fetched`);
    }
    const secret = pairedSecret(isk);
    log.info(`paired with the laptop '${s.serverName}'`);
    return {
      server: {
        address: host,
        family: 'IPv6',
        interface: iface,
        mac: await o.net.mac(iface),
        payloadPort: s.payloadPort,
        serverName: s.serverName,
        busy: false,
        sent: 0,
        counters: newCounters(),
      },
      keys: { psk: deriveKey(secret, 'payloadPsk'), manifestKey: deriveKey(secret, 'manifest') },
      identity: c.identity,
    };
  }
}
