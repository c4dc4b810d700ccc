// The indirection between our disk code and the programs it drives
// (losetup, mount, umount, cryptsetup, lvm): unit tests replace it with a
// scripted runner that checks the exact command sequence.
import { spawn } from 'node:child_process';
import { StiefelError } from '../errors';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CommandRunner {
  /** Runs a program to completion; never rejects for a non-zero exit (only when it cannot start). */
  run(file: string, args: readonly string[], options?: { input?: string | Buffer }): Promise<RunResult>;
}

/**
 * Runs programs for real. Each child gets its own process group, so a Ctrl-C
 * on the terminal reaches only us: we then finish the step under way and
 * undo everything in order, instead of leaving a half-made loop device or
 * mapping behind.
 */
export const systemRunner: CommandRunner = {
  run(file, args, options = {}) {
    return new Promise((resolve, reject) => {
      const child = spawn(file, [...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, LC_ALL: 'C' } });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (err: NodeJS.ErrnoException) =>
        reject(new StiefelError('E_TOOL_MISSING', err.code === 'ENOENT' ? `${file} is not installed (install it, e.g. with scripts/setup.sh)` : `cannot run ${file}: ${err.message}`, { cause: err })),
      );
      child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
      child.stdin.on('error', () => {});
      child.stdin.end(options.input ?? '');
    });
  },
};

/** Runs and throws a StiefelError naming the command when it fails. */
export async function runChecked(runner: CommandRunner, code: string, file: string, args: readonly string[], options?: { input?: string | Buffer }): Promise<string> {
  const r = await runner.run(file, args, options);
  if (r.code !== 0) {
    const detail = r.stderr.trim().split('\n').pop() || `exit code ${r.code}`;
    throw new StiefelError(code, `${file} ${args.join(' ')} failed: ${detail}`);
  }
  return r.stdout;
}
