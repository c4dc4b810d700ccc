// Asks a yes/no question on the controlling terminal (/dev/tty), so that it
// works even when stdout is piped. No terminal: the answer is no, and the
// caller says which flag skips the question.
import { closeSync, openSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ReadStream, WriteStream } from 'node:tty';

export async function confirmOnTerminal(question: string, signal?: AbortSignal): Promise<boolean | null> {
  let fd: number;
  try {
    fd = openSync('/dev/tty', 'r+');
  } catch {
    return null;
  }
  const input = new ReadStream(fd);
  const output = new WriteStream(fd);
  const rl = createInterface({ input, output });
  try {
    const answer = await new Promise<string>((resolve) => {
      const onAbort = (): void => resolve('');
      signal?.addEventListener('abort', onAbort, { once: true });
      rl.question(`${question} [y/N] `, (a) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(a);
      });
    });
    return /^\s*y(es)?\s*$/i.test(answer);
  } finally {
    rl.close();
    input.destroy();
    try {
      closeSync(fd);
    } catch {
      // closed with the stream
    }
  }
}
