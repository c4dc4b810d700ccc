// The laptop OS, running on the desktop with its root on the laptop's disk,
// keeps an eye on the laptop (`stiefelctl laptop-watch`, the
// stiefel-laptop-watch service): every few seconds it asks the laptop what
// it serves (STIEFEL-STATUS on the goodbye port, with this boot's token, see
// goodbye.ts) and tells the person at the desktop what they must know
// before their disk goes: the laptop runs on battery, the laptop stopped
// answering (a pulled cable or a laptop that is off), it answers again, or
// it no longer serves this desktop at all.
//
// While the laptop is silent the root file system hangs, so nothing that
// could read it is started then: the lines go to the console device only
// (a tty, not on the disk); wall and the desktop notifications follow once
// the laptop answers again.
import { promises as fs, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import { warningInterval, warningText, type BatteryWarningOptions } from './battery';
import { formatElapsed } from './disk-status';
import type { Notifier } from './notify';
import { mappedFiles, readIntoPageCache } from './resident';
import type { ServerStatus } from './status';

/** Written by the attach script in the laptop OS's initramfs (assets/server-os/stiefel-attach.sh). */
export const GOODBYE_CONF = '/run/stiefelsystem/goodbye.conf';

export interface LaptopAddress {
  host: string;
  port: number;
  token: string;
}

/** goodbye.conf: the shell assignments the attach script wrote (KEY=value lines). */
export function parseGoodbyeConf(text: string): LaptopAddress | undefined {
  const v: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^(STIEFEL_GOODBYE_[A-Z]+)=['"]?([^'"\s]*)['"]?\s*$/.exec(line.trim());
    if (m) v[m[1]!] = m[2]!;
  }
  const port = Number(v.STIEFEL_GOODBYE_PORT);
  const token = v.STIEFEL_GOODBYE_TOKEN ?? '';
  if (!v.STIEFEL_GOODBYE_HOST || !Number.isInteger(port) || port < 1 || port > 65535 || !/^[0-9a-f]{64}$/.test(token)) return undefined;
  return { host: v.STIEFEL_GOODBYE_HOST, port, token };
}

export type Answer = { status: ServerStatus } | { refused: true } | { error: string };

/** One STIEFEL-STATUS request: the laptop's status, its refusal, or why there was no answer. */
export function askLaptop(a: LaptopAddress, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve) => {
    let text = '';
    const s = connect({ host: a.host, port: a.port });
    const done = (answer: Answer): void => {
      s.destroy();
      resolve(answer);
    };
    s.setTimeout(timeoutMs, () => done({ error: `no answer within ${timeoutMs / 1000} s` }));
    s.setEncoding('utf8');
    s.on('connect', () => s.write(`STIEFEL-STATUS 1 ${a.token}\n`));
    s.on('data', (d: string) => {
      text += d;
      if (text.length > 64 * 1024) return done({ error: 'an answer too long to be a status' });
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      const line = text.slice(0, nl);
      if (line === 'NO') return done({ refused: true });
      if (!line.startsWith('OK ')) return done({ error: 'an answer that is not a status' });
      try {
        done({ status: JSON.parse(line.slice(3)) as ServerStatus });
      } catch {
        done({ error: 'an answer that is not a status' });
      }
    });
    s.on('end', () => done({ error: 'the connection closed without an answer' }));
    s.on('error', (err: Error) => done({ error: err.message }));
  });
}

export interface Saying {
  text: string;
  /** A warning (battery, silence, refusal) rather than good news. */
  warn: boolean;
  urgent: boolean;
}

export interface WatchRules extends BatteryWarningOptions {
  /** Without an answer this long, the desktop is told (ms). */
  silentAfterMs: number;
  /** ...and again this often while it lasts (ms). */
  silentRepeatMs: number;
}

/**
 * Pure: what to say after each answer (or failure) at time `at`. The laptop
 * counts as silent from its last answer on; a refusal is said once.
 */
export function laptopWatchRules(host: string, r: WatchRules): { observe(answer: Answer, at: number): Saying[] } {
  let lastAnswer: number | undefined;
  let silentSaidAt: number | undefined;
  let refusedSaid = false;
  let batteryNextAt: number | undefined;
  let onBattery = false;
  return {
    observe(answer, at) {
      const out: Saying[] = [];
      lastAnswer ??= at;
      if ('error' in answer) {
        const quiet = at - lastAnswer;
        if (quiet >= r.silentAfterMs && (silentSaidAt === undefined || at - silentSaidAt >= r.silentRepeatMs)) {
          out.push({
            text: `the laptop at ${host} has not answered for ${formatElapsed(quiet)}: the cable is out or the laptop is off; programs that use the disk wait until it is back`,
            warn: true,
            urgent: true,
          });
          silentSaidAt = at;
        }
        return out;
      }
      if (silentSaidAt !== undefined) out.push({ text: `the laptop at ${host} answers again, after ${formatElapsed(at - lastAnswer)}`, warn: false, urgent: false });
      silentSaidAt = undefined;
      lastAnswer = at;
      if ('refused' in answer) {
        if (!refusedSaid) {
          out.push({
            text: `the laptop at ${host} no longer serves this desktop (it refuses this boot's token: its server restarted): save your work elsewhere and power off`,
            warn: true,
            urgent: true,
          });
        }
        refusedSaid = true;
        return out;
      }
      refusedSaid = false;
      const power = answer.status.power;
      const interval = power ? warningInterval(power, r) : undefined;
      if (interval === undefined) {
        if (onBattery) out.push({ text: 'the laptop is on mains power again', warn: false, urgent: false });
        onBattery = false;
        batteryNextAt = undefined;
        return out;
      }
      onBattery = true;
      if (batteryNextAt === undefined || at >= batteryNextAt || batteryNextAt - at > interval) {
        out.push({ text: warningText(power, r), warn: true, urgent: power.capacity !== undefined && power.capacity < r.lowPercent });
        batteryNextAt = at + interval;
      }
      return out;
    },
  };
}

export interface LaptopWatchOptions {
  conf: string;
  rules: WatchRules;
  everyMs: number;
  /** The console device the lines are written to (the desktop's screen or serial). */
  console: string;
  notifier: Notifier;
  now?: () => number;
  /**
   * Files read whole at start so that the watch's own code is in memory
   * when the disk hangs (resident.ts): /proc/self/maps's when left out.
   */
  residentMaps?: () => string;
}

/** Reads goodbye.conf; a laptop OS not booted over the cable has none. */
export async function readLaptopAddress(path: string): Promise<LaptopAddress> {
  const text = await fs.readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') {
      throw new StiefelError('E_LAPTOP_WATCH', `there is no ${path}: this system was not booted over the cable by stiefelsystem (with WireGuard), so there is no laptop to watch`);
    }
    throw new StiefelError('E_LAPTOP_WATCH', `cannot read ${path}: ${err.message}`);
  });
  const a = parseGoodbyeConf(text);
  if (!a) throw new StiefelError('E_LAPTOP_WATCH', `${path} does not name the laptop (STIEFEL_GOODBYE_HOST, _PORT, _TOKEN): it is written by stiefelsystem's initramfs hook; boot over the cable again`);
  return a;
}

/** Asks every `everyMs` until aborted; says what laptopWatchRules finds. */
export async function runLaptopWatch(o: LaptopWatchOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<void> {
  const now = o.now ?? Date.now;
  const address = await readLaptopAddress(o.conf);
  const rules = laptopWatchRules(address.host, o.rules);
  const onConsole = (text: string): Promise<void> =>
    fs.appendFile(o.console, `stiefelsystem: ${text}\r\n`).catch((err: Error) => ctx.log.debug(`${o.console}: ${err.message}`));
  /** Wall and notifications wait while the disk hangs (they start programs from it). */
  const pending: Saying[] = [];
  const tellPending = async (): Promise<void> => {
    for (const s of pending.splice(0)) await o.notifier.tell(s.warn ? 'the laptop needs you' : 'the laptop', s.text, { urgent: s.urgent }).catch((err: Error) => ctx.log.debug(`telling the users: ${err.message}`));
  };
  // While the disk answers: the pages of node and its libraries into memory (resident.ts).
  const kept = readIntoPageCache(mappedFiles((o.residentMaps ?? (() => readFileSync('/proc/self/maps', 'utf8')))()));
  ctx.log.debug(`read ${kept.files} mapped files (${(kept.bytes / 1048576).toFixed(1)} MiB) into memory, for the outages to come`);
  for (const f of kept.failed) ctx.log.warn(`cannot keep in memory ${f}: the watch may hang with the disk when the laptop is gone`);
  const started = `watching the laptop at ${address.host} (every ${o.everyMs / 1000} s)`;
  ctx.log.info(started);
  await onConsole(started);
  while (!ctx.signal.aborted) {
    const answer = await askLaptop(address, Math.max(1000, o.everyMs - 500));
    if ('error' in answer) ctx.log.debug(`no status from the laptop: ${answer.error}`);
    for (const s of rules.observe(answer, now())) {
      if (s.warn) ctx.log.warn(s.text);
      else ctx.log.info(s.text);
      await onConsole(s.text);
      pending.push(s);
    }
    if (!('error' in answer)) await tellPending();
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, o.everyMs);
      ctx.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
  }
}
