// Undo steps, run last-in first-out: every mount, loop device, LUKS mapping
// and activated volume group registers how to undo itself the moment it
// exists, so that close() leaves the disk exactly as it was, whatever failed
// or was interrupted in between.
import type { Logger } from '../log';

export class CleanupStack {
  #steps: { what: string; undo: () => Promise<void> }[] = [];
  #closed = false;

  constructor(readonly log: Logger) {}

  push(what: string, undo: () => Promise<void>): void {
    this.#steps.push({ what, undo });
  }

  get size(): number {
    return this.#steps.length;
  }

  /** Undoes everything; failures are logged and the rest still run. Returns what failed. */
  async run(): Promise<string[]> {
    const failed: string[] = [];
    while (this.#steps.length) {
      const step = this.#steps.pop()!;
      try {
        await step.undo();
        this.log.debug(`undid: ${step.what}`);
      } catch (err) {
        failed.push(`${step.what}: ${err instanceof Error ? err.message : String(err)}`);
        this.log.warn(`could not undo ${step.what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.#closed = true;
    return failed;
  }

  get closed(): boolean {
    return this.#closed;
  }
}
