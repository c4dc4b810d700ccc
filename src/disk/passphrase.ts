// How a LUKS passphrase is asked for. The server will answer it through the
// desktop channel; the CLI asks on the terminal. The provider never sees
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
