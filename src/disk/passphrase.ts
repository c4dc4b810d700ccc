// How a LUKS passphrase is asked for. The server asks the desktop through the
// payload channel and its own console at once (firstAnswer); the CLI asks on
// the terminal. The provider never sees
// what the passphrase opens, only the question.
import { StiefelError } from '../errors';

export interface PassphraseQuestion {
  attempt: number;
  attempts: number;
  signal?: AbortSignal | undefined;
}

export interface PassphraseProvider {
  /** How many tries before giving up (default 3). */
  attempts?: number;
  /**
   * Where the answer comes from, for the error when it opens nothing, e.g.
   * "the passphrase in /root/pass" (default: "the passphrase given").
   */
  origin?: string;
  /** What to do about a wrong answer, appended to that error, e.g. "check the file". */
  hint?: string;
  /** Returns the passphrase typed for `question`; rejects to give up. */
  ask(question: string, details: PassphraseQuestion): Promise<string>;
}

/** For callers without a way to ask: any LUKS container is reported, not opened. */
export const noPassphrase: PassphraseProvider = {
  attempts: 1,
  ask() {
    return Promise.reject(new StiefelError('E_LUKS_NO_PASSPHRASE', 'a LUKS passphrase is needed but there is no terminal to ask on'));
  },
};

/**
 * Asks every provider at once (in server mode: the desktop through the
 * payload channel, and the laptop's console as a fallback). The first answer
 * wins and the other questions are withdrawn: the signal each provider got
 * aborts. Gives up only when every provider gave up, with the first one's
 * error; the caller's signal withdraws them all.
 */
export function firstAnswer(providers: readonly PassphraseProvider[], options: { attempts?: number } = {}): PassphraseProvider {
  const first = providers[0];
  if (!first) throw new TypeError('firstAnswer needs at least one provider');
  return {
    attempts: options.attempts ?? first.attempts ?? 3,
    ask(question, details) {
      const withdraw = new AbortController();
      const outer = details.signal;
      const onOuter = (): void => withdraw.abort(outer?.reason);
      if (outer?.aborted) onOuter();
      else outer?.addEventListener('abort', onOuter, { once: true });
      return new Promise<string>((resolve, reject) => {
        const errors: unknown[] = [];
        let failed = 0;
        let settled = false;
        const finish = (): void => {
          settled = true;
          outer?.removeEventListener('abort', onOuter);
          if (!withdraw.signal.aborted) withdraw.abort(new StiefelError('E_ANSWERED', 'answered elsewhere'));
        };
        providers.forEach((p, i) => {
          let answer: Promise<string>;
          try {
            answer = p.ask(question, { ...details, signal: withdraw.signal });
          } catch (err) {
            answer = Promise.reject(err);
          }
          answer.then(
            (a) => {
              if (settled) return;
              finish();
              resolve(a);
            },
            (err: unknown) => {
              errors[i] = err;
              if (settled || ++failed < providers.length) return;
              finish();
              reject(errors[0]);
            },
          );
        });
      });
    },
  };
}
