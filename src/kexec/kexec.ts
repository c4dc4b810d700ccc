// Starting the received kernel: `kexec -l` loads it, `kexec -e` jumps to it.
// Behind an interface so tests can check the exact arguments without
// rebooting the machine they run on.
import { execFile } from 'node:child_process';
import { StiefelError } from '../errors';
import type { Logger } from '../log';

export interface KexecImage {
  kernel: string;
  initrd: string;
  cmdline: string;
}

export interface Kexec {
  /** Loads the kernel, initrd and command line into memory. */
  load(image: KexecImage, ctx: { log: Logger; signal?: AbortSignal }): Promise<void>;
  /** Jumps into the loaded kernel; returns only if that failed. */
  exec(ctx: { log: Logger; signal?: AbortSignal }): Promise<void>;
}

/** kexec-tools arguments for loading; the command line is one argument, never through a shell. */
export function kexecLoadArgs(image: KexecImage): string[] {
  return ['-l', image.kernel, `--initrd=${image.initrd}`, `--command-line=${image.cmdline}`];
}

export const KEXEC_EXEC_ARGS: readonly string[] = ['-e'];

function run(binary: string, args: readonly string[], signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { signal, timeout: 120_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        return reject(new StiefelError('E_KEXEC_MISSING', `${binary} is not installed (kexec-tools); or use --no-kexec --out DIR`, { cause: err }));
      }
      const why = (stderr || err.message).trim().split('\n').filter(Boolean).pop() ?? err.message;
      reject(new StiefelError('E_KEXEC', `${binary} ${args[0]} failed: ${why}`, { cause: err }));
    });
  });
}

/** The real thing: runs kexec-tools' `kexec` (from PATH unless `binary` is given). */
export function kexecTools(options: { binary?: string } = {}): Kexec {
  const binary = options.binary ?? 'kexec';
  return {
    async load(image, ctx) {
      ctx.log.debug(`${binary} ${kexecLoadArgs(image).join(' ')}`);
      await run(binary, kexecLoadArgs(image), ctx.signal);
    },
    async exec(ctx) {
      ctx.log.debug(`${binary} -e`);
      await run(binary, KEXEC_EXEC_ARGS, ctx.signal);
      throw new StiefelError('E_KEXEC', `${binary} -e returned: the new kernel did not start`);
    },
  };
}
