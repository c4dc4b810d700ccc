// Starts the real, bundled `stiefelctl nbd-serve` as a child process on an
// ephemeral port (or a unix socket) and finds the address it printed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliPath } from './cli';

export interface ServeProcess {
  proc: ChildProcess;
  /** nbd:// URI of the export (by its name). */
  uri: string;
  port: number;
  stderr: () => string;
  /** SIGINT (or the given signal) and wait for exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `node`: the Node.js that runs the bundle (default: the one running the tests); `env`: variables added to the test's. */
export async function serve(file: string, args: string[] = [], options: { listen?: string; node?: string; env?: Record<string, string> } = {}): Promise<ServeProcess> {
  const listen = options.listen ?? '127.0.0.1:0';
  const env = { ...process.env, ...options.env };
  const proc = spawn(options.node ?? process.execPath, [cliPath(), 'nbd-serve', file, '--listen', listen, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  proc.stdout!.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const uri = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`nbd-serve did not start: ${err}`)), 15000);
    const check = (): void => {
      const m = /try: nbdinfo (\S+)/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(m[1]!);
      }
    };
    proc.stderr!.on('data', check);
    void exited.then(() => {
      clearTimeout(t);
      reject(new Error(`nbd-serve exited: ${err}`));
    });
  });
  const port = Number(/:(\d+)\//.exec(uri)?.[1] ?? 0);
  return {
    proc,
    uri,
    port,
    stderr: () => err,
    exited,
    async stop(signal = 'SIGINT') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

export function tempDir(tag: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `stf2-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
