// Answers the laptop's questions at the desktop's terminal (/dev/tty):
// shows the prompt and reads one line; a passphrase is read without echo.
// In stiefelOS the role runs under /init with no controlling terminal, so
// there it is the console (/dev/console: the screen, where the person at
// the desktop types). Without either (a service, a pipe) questions are
// refused, with a reason the laptop logs.
import { closeSync, existsSync, openSync } from 'node:fs';
import { ReadStream, WriteStream } from 'node:tty';
import { QuestionError, MAX_ANSWER_LENGTH, type Question, type QuestionAnswerer } from '../payload/questions';

export interface TerminalAnswererOptions {
  /** The terminal devices, the first that opens; /dev/tty, then /dev/console when we are stiefelOS's role. */
  devices?: readonly string[];
}

/** stiefelOS's /init runs the role with the console as its standard input. */
const STIEFELOS_RELEASE = '/etc/stiefelos/release';

function defaultDevices(): string[] {
  return existsSync(STIEFELOS_RELEASE) ? ['/dev/tty', '/dev/console'] : ['/dev/tty'];
}

export function terminalAnswerer(options: TerminalAnswererOptions = {}): QuestionAnswerer {
  const devices = options.devices ?? defaultDevices();
  return {
    answer(question: Question, { signal }): Promise<string> {
      let inFd: number | undefined;
      let outFd: number;
      let device = devices[0]!;
      let lastError: unknown;
      for (const d of devices) {
        try {
          inFd = openSync(d, 'r');
          device = d;
          break;
        } catch (err) {
          lastError = err;
        }
      }
      if (inFd === undefined) {
        return Promise.reject(new QuestionError(`no terminal to ask '${question.prompt}' on (${(lastError as Error).message})`, { cause: lastError }));
      }
      try {
        outFd = openSync(device, 'w');
      } catch (err) {
        closeSync(inFd);
        return Promise.reject(new QuestionError(`no terminal to ask '${question.prompt}' on (${(err as Error).message})`, { cause: err }));
      }
      const input = new ReadStream(inFd);
      const output = new WriteStream(outFd);
      const echo = question.kind !== 'passphrase';
      const suffix = question.kind === 'confirm' ? ' [y/n] ' : question.kind === 'passphrase' ? ' (typing is not shown) ' : ' ';
      return new Promise<string>((resolve, reject) => {
        let line = '';
        const finish = (result: string | Error): void => {
          input.off('data', onData);
          signal.removeEventListener('abort', onAbort);
          input.setRawMode(false);
          output.write('\n');
          input.destroy();
          output.destroy();
          if (typeof result === 'string') resolve(result);
          else reject(result);
        };
        const onAbort = (): void => finish(new QuestionError('the question was withdrawn'));
        const onData = (data: Buffer): void => {
          for (const ch of data.toString('utf8')) {
            if (ch === '\r' || ch === '\n') {
              if (question.kind === 'confirm') {
                if (/^(y|yes)$/i.test(line.trim())) return finish('yes');
                if (/^(n|no)$/i.test(line.trim())) return finish('no');
                line = '';
                output.write('\nplease type y or n:' + suffix);
                continue;
              }
              return finish(line);
            }
            if (ch === '\x03' || ch === '\x04') return finish(new QuestionError('the person at the desktop declined to answer'));
            if (ch === '\x7f' || ch === '\b') {
              if (line.length > 0) {
                line = line.slice(0, -1);
                if (echo) output.write('\b \b');
              }
              continue;
            }
            if (ch === '\x15') {
              // Ctrl-U: start over.
              if (echo) output.write('\b \b'.repeat(line.length));
              line = '';
              continue;
            }
            if (ch < ' ') continue;
            if (line.length >= MAX_ANSWER_LENGTH) continue;
            line += ch;
            if (echo) output.write(ch);
          }
        };
        signal.addEventListener('abort', onAbort, { once: true });
        input.setRawMode(true);
        input.on('data', onData);
        output.write(`\n${question.fromLaptop === false ? '' : 'The laptop asks: '}${question.prompt}${suffix}`);
      });
    },
  };
}
