// The laptop's end of pairing: the code on its console, the tries left, the
// attempts in flight and the desktops paired this boot. A code is fresh each
// boot, valid `validMs` and for `tries` wrong guesses; used once, it is
// replaced, so the next desktop (or the same one rebooted) pairs anew. Pure
// state: the HTTP server (pxe-http.ts) feeds it requests.
import { randomBytes } from 'node:crypto';
import { deriveKey } from '../crypto/keys';
import { confirmTag, laptopPairingRespond, newPairingCode, pairedSecret, pairingTranscriptHash, verifyConfirmTag } from '../crypto/pairing-code';
import { CpaceError } from '../crypto/cpace';
import {
  PAIRED_IDENTITY_PREFIX,
  type ConfirmRequest,
  type ConfirmResponse,
  type StartRequest,
} from '../payload/pairing';

/** Why a code was (re)made: shown on the console with it. */
export type CodeReason = 'first' | 'used' | 'expired' | 'wrong';

export interface PairingDeskOptions {
  validMs: number;
  /** Wrong codes before a new one is shown: 3 (the security model's limit). */
  tries?: number;
  /** Shows a new code on the laptop's console. */
  show(code: string, reason: CodeReason, validMs: number): void;
  now?: () => number;
  /** Tests pick the codes. */
  makeCode?: () => string;
}

/** A refused pairing request: the HTTP status, a code and the line for the desktop. */
export class PairingRefused extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Attempt {
  host: string;
  name: string;
  /** The code this attempt ran with: a new code ends it. */
  code: string;
  isk: Uint8Array;
  transcript: Buffer;
  expires: number;
}

interface Paired {
  host: string;
  psk: Buffer;
  manifestKey: Buffer;
}

/** An attempt's confirmation must follow its start within this. */
const ATTEMPT_MS = 60_000;
/** At most this many attempts wait for their confirmation; more push out the oldest. */
const MAX_ATTEMPTS = 8;
/** The desktops paired this boot whose keys are kept (the latest). */
const MAX_PAIRED = 4;
/**
 * After a code was typed wrong `tries` times, pairing pauses: 10 s, doubling
 * each time in a row, at most 10 min. Without it the codes, each good for 3
 * guesses, could be guessed through one after another as fast as the laptop
 * answers; with it an attacker gets about 3 guesses in 10 minutes (a million
 * codes: years), while a person who mistyped waits seconds.
 */
const PAUSE_FIRST_MS = 10_000;
const PAUSE_MAX_MS = 600_000;

export class PairingDesk {
  readonly #o: PairingDeskOptions;
  readonly #now: () => number;
  readonly #tries: number;
  #code = '';
  #expires = 0;
  #wrong = 0;
  /** Codes used up by wrong guesses in a row, and until when pairing pauses. */
  #lostCodes = 0;
  #pausedUntil = 0;
  readonly #attempts = new Map<string, Attempt>();
  readonly #paired = new Map<string, Paired>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: PairingDeskOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#tries = options.tries ?? 3;
  }

  /** Makes the first code and shows it: once the desktop can reach us. */
  open(): void {
    this.#renew('first');
  }

  /** The code shown now (tests read it). */
  get code(): string {
    return this.#code;
  }

  #renew(reason: CodeReason): void {
    this.#code = (this.#o.makeCode ?? newPairingCode)();
    this.#expires = this.#now() + this.#o.validMs;
    this.#wrong = 0;
    this.#attempts.clear();
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#renew('expired'), this.#o.validMs);
    this.#timer.unref();
    this.#o.show(this.#code, reason, this.#o.validMs);
  }

  #current(): void {
    if (this.#code === '') throw new PairingRefused(503, 'E_PAIR_CLOSED', 'the laptop does not pair (yet)');
    const paused = this.#pausedUntil - this.#now();
    if (paused > 0) throw new PairingRefused(429, 'E_PAIR_PAUSED', `too many wrong pairing codes: the laptop pairs again in ${Math.ceil(paused / 1000)} s (with the code then on its console)`);
    if (this.#now() >= this.#expires) this.#renew('expired');
  }

  /** The desktop's CPace share: answered with ours, for this code. */
  start(req: StartRequest, host: string): { attempt: string; message: Buffer } {
    this.#current();
    let answer: { message: Uint8Array; isk: Uint8Array };
    try {
      answer = laptopPairingRespond({ code: this.#code, sid: req.sid, desktopMessage: req.message });
    } catch (err) {
      if (err instanceof CpaceError) throw new PairingRefused(400, 'E_PAIR_MESSAGE', `not a pairing message: ${err.message}`);
      throw err;
    }
    const { message, isk } = answer;
    const attempt = randomBytes(16).toString('hex');
    const ours = Buffer.from(message);
    for (const [id, a] of this.#attempts) if (a.expires <= this.#now()) this.#attempts.delete(id);
    while (this.#attempts.size >= MAX_ATTEMPTS) this.#attempts.delete(this.#attempts.keys().next().value!);
    this.#attempts.set(attempt, {
      host,
      name: req.name,
      code: this.#code,
      isk,
      transcript: pairingTranscriptHash(req.sid, req.message, ours, Buffer.from(attempt)),
      expires: this.#now() + ATTEMPT_MS,
    });
    return { attempt, message: ours };
  }

  /** The desktop's proof that it typed the code: paired (and the code used up), or refused. */
  confirm(req: ConfirmRequest, host: string): ConfirmResponse & { name: string } {
    this.#current();
    const a = this.#attempts.get(req.attempt);
    // Replayed, finished, timed out, from another host or for an old code: not a guess at this code.
    if (!a || a.host !== host || a.code !== this.#code || a.expires <= this.#now()) {
      throw new PairingRefused(404, 'E_PAIR_ATTEMPT', 'this pairing attempt is unknown or over: start again');
    }
    this.#attempts.delete(req.attempt);
    if (!verifyConfirmTag(a.isk, 'desktop', a.transcript, req.tag)) {
      this.#wrong++;
      const left = this.#tries - this.#wrong;
      if (left > 0) throw new PairingRefused(403, 'E_PAIR_CODE', `wrong pairing code: ${left} ${left === 1 ? 'try' : 'tries'} left`);
      this.#lostCodes++;
      const pauseMs = Math.min(PAUSE_MAX_MS, PAUSE_FIRST_MS * 2 ** (this.#lostCodes - 1));
      this.#pausedUntil = this.#now() + pauseMs;
      this.#renew('wrong');
      throw new PairingRefused(403, 'E_PAIR_CODE', `wrong pairing code ${this.#tries} times: the laptop shows a new one; it pairs again in ${Math.round(pauseMs / 1000)} s`);
    }
    this.#lostCodes = 0;
    const secret = pairedSecret(a.isk);
    const identity = `${PAIRED_IDENTITY_PREFIX}${req.attempt}`;
    this.#paired.set(identity, { host, psk: deriveKey(secret, 'payloadPsk'), manifestKey: deriveKey(secret, 'manifest') });
    while (this.#paired.size > MAX_PAIRED) this.#paired.delete(this.#paired.keys().next().value!);
    this.#renew('used');
    return { tag: Buffer.from(confirmTag(a.isk, 'laptop', a.transcript)), identity, name: a.name };
  }

  /** The payload keys of a paired desktop, for its identity from its host only. */
  keysFor(identity: string, host: string): { psk: Buffer; manifestKey: Buffer } | undefined {
    const p = this.#paired.get(identity);
    return p && p.host === host ? { psk: p.psk, manifestKey: p.manifestKey } : undefined;
  }

  close(): void {
    clearTimeout(this.#timer);
    this.#code = '';
    this.#attempts.clear();
    this.#paired.clear();
  }
}
