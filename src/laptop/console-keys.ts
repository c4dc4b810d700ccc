// Keys typed on the laptop's console while stiefelOS serves: the countdown
// back to the laptop's own OS is cancelled by any key, and after a desktop
// vanished R returns anyway. Read in raw mode from the terminal stiefelOS
// runs the server on; without one, no key ever comes.
import { closeSync, openSync } from 'node:fs';
import { ReadStream } from 'node:tty';
import { isatty } from 'node:tty';
import type { ConsoleIO } from './way-back';

export function terminalKeys(options: { ttyPath?: string } = {}): ConsoleIO {
  const path = options.ttyPath ?? '/proc/self/fd/0';
  return {
    key(ms, signal) {
      return new Promise((resolve) => {
        let fd: number | undefined;
        let input: ReadStream | undefined;
        try {
          fd = openSync(path, 'r');
          if (isatty(fd)) input = new ReadStream(fd);
        } catch {
          fd = undefined;
        }
        const done = (key: string | undefined): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          if (input) {
            input.off('data', onData);
            input.setRawMode(false);
            input.destroy();
          } else if (fd !== undefined) {
            try {
              closeSync(fd);
            } catch {
              // closed already
            }
          }
          resolve(key);
        };
        const onData = (d: Buffer): void => done(d.toString('utf8').slice(0, 1));
        const onAbort = (): void => done(undefined);
        const timer = setTimeout(() => done(undefined), ms);
        signal.addEventListener('abort', onAbort, { once: true });
        if (input) {
          input.setRawMode(true);
          input.on('data', onData);
        }
      });
    },
  };
}
