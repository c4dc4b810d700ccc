// Questions the laptop asks the person at the desktop (a LUKS passphrase for
// /boot, say), through the payload channel: the server queues a question, the
// client long-polls for it, shows it, and posts the answer. Both directions
// travel inside the TLS-PSK connection, so the passphrase is never in clear.
import { randomBytes } from 'node:crypto';
import type { PassphraseProvider } from '../disk/passphrase';
import { StiefelError } from '../errors';

export const QUESTION_KINDS = ['passphrase', 'text', 'confirm'] as const;
export type QuestionKind = (typeof QUESTION_KINDS)[number];

export interface Question {
  id: string;
  /** passphrase: typed without echo; text: a line; confirm: yes or no. */
  kind: QuestionKind;
  /** One line shown to the person at the desktop. */
  prompt: string;
  /** False for the desktop's own questions (the pairing code): not introduced as the laptop's. */
  fromLaptop?: boolean;
}

export const MAX_PROMPT_LENGTH = 300;
export const MAX_ANSWER_LENGTH = 1024;

/** Server side: ask the client something, wait for the answer. */
export interface QuestionAsker {
  ask(question: { kind: QuestionKind; prompt: string }, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<string>;
}

/** Client side: shows a question to the person and returns the answer. */
export interface QuestionAnswerer {
  answer(question: Question, options: { signal: AbortSignal }): Promise<string>;
}

/**
 * Boot-entry discovery's PassphraseProvider (src/disk/passphrase.ts) asking
 * through this channel: a LUKS passphrase for the laptop's /boot is typed on
 * the desktop. The question's trailing ': ' is the terminal's business.
 */
export function passphraseProvider(asker: QuestionAsker, options: { attempts?: number } = {}): PassphraseProvider {
  return {
    attempts: options.attempts ?? 3,
    ask: (question, details) => asker.ask({ kind: 'passphrase', prompt: question.replace(/[\s:]+$/, '') }, { signal: details.signal }),
  };
}

/** A question whose answer is not coming (client gone, timeout, no terminal). */
export class QuestionError extends StiefelError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_QUESTION', message, options);
  }
}

export function isValidQuestion(v: unknown): v is Question {
  if (typeof v !== 'object' || v === null) return false;
  const q = v as Record<string, unknown>;
  return (
    typeof q.id === 'string' &&
    /^[0-9a-f]{16,64}$/.test(q.id) &&
    typeof q.kind === 'string' &&
    (QUESTION_KINDS as readonly string[]).includes(q.kind) &&
    typeof q.prompt === 'string' &&
    q.prompt.length <= MAX_PROMPT_LENGTH &&
    !/[\x00-\x1f\x7f]/.test(q.prompt)
  );
}

interface Pending {
  question: Question;
  resolve: (answer: string) => void;
  reject: (err: Error) => void;
}

/**
 * The server's queue of questions for one client session. Questions are
 * handed out oldest first, again and again until answered, so a client that
 * reconnects sees the question it missed.
 */
export class QuestionChannel implements QuestionAsker {
  readonly #pending = new Map<string, Pending>();
  #waiters: Array<() => void> = [];
  #closed: Error | undefined;

  ask(question: { kind: QuestionKind; prompt: string }, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<string> {
    if (this.#closed) return Promise.reject(this.#closed);
    const prompt = question.prompt.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, MAX_PROMPT_LENGTH);
    const q: Question = { id: randomBytes(16).toString('hex'), kind: question.kind, prompt };
    return new Promise<string>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => settle(new QuestionError(`the question '${prompt}' was withdrawn`));
      const settle = (result: string | Error): void => {
        if (!this.#pending.delete(q.id)) return;
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (typeof result === 'string') resolve(result);
        else reject(result);
      };
      this.#pending.set(q.id, { question: q, resolve: (a) => settle(a), reject: (e) => settle(e) });
      if (options.timeoutMs) {
        timer = setTimeout(() => settle(new QuestionError(`nobody answered '${prompt}' within ${Math.round(options.timeoutMs! / 1000)} s`)), options.timeoutMs);
      }
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.#wake();
    });
  }

  /** The oldest unanswered question, waiting up to waitMs for one. */
  async next(waitMs: number, signal?: AbortSignal): Promise<Question | undefined> {
    const first = (): Question | undefined => this.#pending.values().next().value?.question;
    if (first() || this.#closed || waitMs <= 0) return first();
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.#waiters = this.#waiters.filter((w) => w !== done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      signal?.addEventListener('abort', done, { once: true });
      this.#waiters.push(done);
    });
    return first();
  }

  /** Delivers an answer; false when no such question is open. */
  answer(id: string, answer: string): boolean {
    const p = this.#pending.get(id);
    if (!p) return false;
    p.resolve(answer);
    return true;
  }

  /** The client said it cannot answer (no terminal, say). */
  refuse(id: string, reason: string): boolean {
    const p = this.#pending.get(id);
    if (!p) return false;
    p.reject(new QuestionError(`the desktop could not answer '${p.question.prompt}': ${reason}`));
    return true;
  }

  get openQuestions(): number {
    return this.#pending.size;
  }

  /** Rejects every open question (the session ended). */
  close(reason: Error): void {
    this.#closed = reason;
    for (const p of [...this.#pending.values()]) p.reject(reason);
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters) w();
  }
}
