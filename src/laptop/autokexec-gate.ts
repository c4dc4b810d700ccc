// When the laptop's own OS may reboot into stiefelOS: one trigger at a time,
// a countdown a person can cancel, a hold-off after a cancel (the desktop
// keeps asking every 50 ms and would trigger again at once), and a pause
// after a failed attempt. Pure: time comes from the caller.

export type GateState = 'idle' | 'countdown' | 'firing' | 'holdoff';

export type TriggerVerdict =
  | { start: true }
  | { start: false; why: 'counting down' | 'rebooting' | 'held off after a cancel' | 'paused after a failed attempt'; untilMs?: number };

export interface GateOptions {
  /** After a cancel, triggers are ignored this long. */
  holdoffMs: number;
  /** After a failed attempt (stiefelOS missing, kexec refused), this long. */
  retryMs: number;
}

export class AutokexecGate {
  #state: GateState = 'idle';
  #until = 0;
  #pausedByFailure = false;
  readonly #options: GateOptions;

  constructor(options: GateOptions) {
    this.#options = options;
  }

  get state(): GateState {
    return this.#state;
  }

  /** A valid trigger arrived at `now`: may a countdown start? */
  trigger(now: number): TriggerVerdict {
    if (this.#state === 'holdoff' && now >= this.#until) this.#state = 'idle';
    switch (this.#state) {
      case 'idle':
        this.#state = 'countdown';
        return { start: true };
      case 'countdown':
        return { start: false, why: 'counting down' };
      case 'firing':
        return { start: false, why: 'rebooting' };
      case 'holdoff':
        return { start: false, why: this.#pausedByFailure ? 'paused after a failed attempt' : 'held off after a cancel', untilMs: this.#until };
    }
  }

  /** The countdown ran out: reboot now. */
  fire(): void {
    if (this.#state === 'countdown') this.#state = 'firing';
  }

  /** A person cancelled: true when there was something to cancel. */
  cancel(now: number): boolean {
    if (this.#state !== 'countdown') return false;
    this.#hold(now + this.#options.holdoffMs, false);
    return true;
  }

  /** The attempt failed (nothing was rebooted): try again after a pause. */
  failed(now: number): void {
    this.#hold(now + this.#options.retryMs, true);
  }

  #hold(until: number, byFailure: boolean): void {
    this.#state = 'holdoff';
    this.#until = until;
    this.#pausedByFailure = byFailure;
  }
}
