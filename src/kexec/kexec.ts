// Starting another kernel: kexec-tools loads it, then either systemd shuts
// the running system down cleanly and jumps into it (`systemctl kexec`, on
// a machine whose own OS runs: file systems unmounted first), or we jump at
// once (`kexec -e`, inside stiefelOS, which has nothing mounted to lose).
// Behind an interface so tests can check the exact arguments without
// rebooting the machine they run on.
//
// Loading uses the kernel's file-based interface (`kexec -s`,
// kexec_file_load) first: with Secure Boot on, Debian's kernel is locked
// down and refuses the older kexec_load outright, while kexec_file_load
// checks the new kernel's signature (a distribution kernel passes). Only
// when the file-based load is unavailable for a reason other than a
// signature (an old kernel without it, a kernel built without
// CONFIG_KEXEC_FILE) is `kexec -l` tried.
import { execFile } from 'node:child_process';
import { StiefelError } from '../errors';
import type { Logger } from '../log';

export interface KexecImage {
  kernel: string;
  initrd: string;
  cmdline: string;
}

/** How the loaded kernel is started: through systemd's clean shutdown, or at once. */
export type KexecHandOff = 'systemctl' | 'direct';

export interface Kexec {
  /** Loads the kernel, initrd and command line into memory. */
  load(image: KexecImage, ctx: { log: Logger; signal?: AbortSignal }): Promise<void>;
  /** Forgets a loaded kernel (a cancelled hand-off). */
  unload(ctx: { log: Logger; signal?: AbortSignal }): Promise<void>;
  /** Starts the loaded kernel; returns only if that failed. */
  exec(ctx: { log: Logger; signal?: AbortSignal }): Promise<void>;
}

/** kexec-tools arguments for loading; the command line is one argument, never through a shell. */
export function kexecLoadArgs(image: KexecImage, mode: 'file' | 'legacy' = 'file'): string[] {
  return [mode === 'file' ? '-s' : '-l', ...(mode === 'file' ? ['-l'] : []), image.kernel, `--initrd=${image.initrd}`, `--command-line=${image.cmdline}`];
}

export const KEXEC_EXEC_ARGS: readonly string[] = ['-e'];
export const KEXEC_UNLOAD_ARGS: readonly string[] = ['-u'];

/**
 * Whether a failed file-based load may be retried with kexec_load: only when
 * the kernel lacks kexec_file_load (ENOSYS) or kexec-tools says it is not
 * supported. A refused signature (EKEYREJECTED, EBADMSG, EPERM under
 * lockdown) must not be worked around: the legacy call would be refused the
 * same way, or would bypass the check that Secure Boot asks for.
 */
export function fileLoadMayFallBack(stderr: string): boolean {
  if (/key was rejected|bad message|signature|lockdown|operation not permitted|permission denied|required key/i.test(stderr)) return false;
  return /function not implemented|not supported|syscall.*not available|unknown option|invalid option|unrecognized option/i.test(stderr);
}

interface RunFailure {
  stderr: string;
  err: NodeJS.ErrnoException;
}

function run(binary: string, args: readonly string[], signal: AbortSignal | undefined): Promise<RunFailure | undefined> {
  return new Promise((resolve) => {
    execFile(binary, args, { signal, timeout: 120_000 }, (err, _stdout, stderr) => {
      resolve(err ? { stderr: String(stderr), err: err as NodeJS.ErrnoException } : undefined);
    });
  });
}

function failure(binary: string, args: readonly string[], f: RunFailure, fix: string): StiefelError {
  if (f.err.code === 'ENOENT') return new StiefelError('E_KEXEC_MISSING', `${binary} is not installed (kexec-tools)${fix}`, { cause: f.err });
  const why = (f.stderr || f.err.message).trim().split('\n').filter(Boolean).pop() ?? f.err.message;
  return new StiefelError('E_KEXEC', `${binary} ${args.filter((a) => a.startsWith('-') && !a.startsWith('--')).join(' ')} failed: ${why}`, { cause: f.err });
}

export interface KexecToolsOptions {
  /** kexec-tools' binary; `kexec` from PATH. */
  binary?: string;
  /** systemd's systemctl, for the clean hand-off. */
  systemctl?: string;
  handOff?: KexecHandOff;
  /** Added to the "not installed" message (e.g. "; or use --no-kexec --out DIR"). */
  missingFix?: string;
}

/** The real thing: kexec-tools, and systemctl for the clean hand-off. */
export function kexecTools(options: KexecToolsOptions = {}): Kexec {
  const binary = options.binary ?? 'kexec';
  const systemctl = options.systemctl ?? 'systemctl';
  const fix = options.missingFix ?? '';
  return {
    async load(image, ctx) {
      const fileArgs = kexecLoadArgs(image, 'file');
      ctx.log.debug(`${binary} ${fileArgs.join(' ')}`);
      const first = await run(binary, fileArgs, ctx.signal);
      if (!first) return;
      if (first.err.code === 'ENOENT' || !fileLoadMayFallBack(first.stderr)) throw failure(binary, fileArgs, first, fix);
      const legacyArgs = kexecLoadArgs(image, 'legacy');
      ctx.log.info(`the kernel has no file-based kexec load (${first.stderr.trim().split('\n').pop()}); loading with kexec_load`);
      const second = await run(binary, legacyArgs, ctx.signal);
      if (second) throw failure(binary, legacyArgs, second, fix);
    },
    async unload(ctx) {
      ctx.log.debug(`${binary} -u`);
      const f = await run(binary, KEXEC_UNLOAD_ARGS, ctx.signal);
      if (f) throw failure(binary, KEXEC_UNLOAD_ARGS, f, fix);
    },
    async exec(ctx) {
      if (options.handOff === 'systemctl') {
        // systemd stops every service, unmounts the file systems and then
        // jumps into the kernel loaded above.
        ctx.log.debug(`${systemctl} kexec`);
        const f = await run(systemctl, ['kexec'], ctx.signal);
        if (f) throw failure(systemctl, ['kexec'], f, '');
        return;
      }
      ctx.log.debug(`${binary} -e`);
      const f = await run(binary, KEXEC_EXEC_ARGS, ctx.signal);
      if (f) throw failure(binary, KEXEC_EXEC_ARGS, f, fix);
      throw new StiefelError('E_KEXEC', `${binary} -e returned: the new kernel did not start`);
    },
  };
}

/**
 * How to start a loaded kernel here: through systemd when it runs the
 * machine (a desktop or laptop running its own OS), at once otherwise
 * (stiefelOS's busybox init). `/run/systemd/system` exists exactly when
 * systemd is PID 1 (sd_booted(3)).
 */
export async function detectHandOff(exists: (path: string) => Promise<boolean>): Promise<KexecHandOff> {
  return (await exists('/run/systemd/system')) ? 'systemctl' : 'direct';
}
