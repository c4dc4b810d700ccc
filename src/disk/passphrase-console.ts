// Asks for a LUKS passphrase on the controlling terminal (/dev/tty), without
// echo: the console provider the CLI passes in. Ctrl-C while typing gives up.
import { openSync, closeSync } from 'node:fs';
import { ReadStream, WriteStream } from 'node:tty';
import { StiefelError } from '../errors';
import type { PassphraseProvider } from './passphrase';

export function consolePassphraseProvider(options: { attempts?: number; ttyPath?: string } = {}): PassphraseProvider {
  return {
    attempts: options.attempts ?? 3,
    ask(question, details) {
      let fd: number;
      try {
        fd = openSync(options.ttyPath ?? '/dev/tty', 'r+');
      } catch {
        return Promise.reject(new StiefelError('E_LUKS_NO_PASSPHRASE', 'a LUKS passphrase is needed but there is no terminal to ask on (run stiefelctl boot-entries in a terminal)'));
      }
      const input = new ReadStream(fd);
      const output = new WriteStream(fd);
      return new Promise<string>((resolve, reject) => {
        let typed = '';
        const done = (err: Error | null): void => {
          input.setRawMode(false);
          input.off('data', onData);
          details.signal?.removeEventListener('abort', onAbort);
          output.write('\n');
          input.destroy();
          try {
            closeSync(fd);
          } catch {
            // already closed by the stream
          }
          if (err) reject(err);
          else resolve(typed);
        };
        const onAbort = (): void => done(new StiefelError('E_INTERRUPTED', 'interrupted while asking for the passphrase'));
        const onData = (chunk: Buffer): void => {
          for (const ch of chunk.toString('utf8')) {
            if (ch === '\r' || ch === '\n') return done(null);
            if (ch === '\u0003' || ch === '\u0004') return done(new StiefelError('E_INTERRUPTED', 'no passphrase given'));
            if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
            else typed += ch;
          }
        };
        details.signal?.addEventListener('abort', onAbort, { once: true });
        input.setRawMode(true);
        output.write(question);
        input.on('data', onData);
      });
    },
  };
}
