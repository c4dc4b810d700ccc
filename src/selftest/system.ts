// The real SelftestSystem: child processes, /proc and /sys.
import { execFile } from 'node:child_process';
import { access, readFile, readdir } from 'node:fs/promises';
import type { RunResult, SelftestSystem } from './run';

export function createSelftestSystem(env: Readonly<Record<string, string | undefined>>): SelftestSystem {
  return {
    run(file, args, timeoutMs) {
      return new Promise<RunResult>((resolve) => {
        execFile(
          file,
          [...args],
          { timeout: timeoutMs, encoding: 'utf8', env: { ...env }, killSignal: 'SIGKILL' },
          (err, stdout, stderr) => {
            if (!err) return resolve({ code: 0, stdout, stderr });
            const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean };
            if (typeof e.code === 'number') return resolve({ code: e.code, stdout, stderr });
            if (e.killed) return resolve({ code: null, stdout, stderr, error: `timed out after ${timeoutMs} ms` });
            resolve({ code: null, stdout, stderr, error: e.code === 'ENOENT' ? `${file} is not in the image` : e.message });
          },
        );
      });
    },
    readFile: (path) => readFile(path, 'utf8'),
    readdir: (path) => readdir(path),
    exists: (path) =>
      access(path).then(
        () => true,
        () => false,
      ),
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    now: () => Date.now(),
  };
}
