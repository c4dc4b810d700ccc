// --emulate, for the benchmarks: the server under qemu-user (qemu-x86_64,
// the same TCG engine as the VM tests' QEMU, -cpu max as they use) pinned to
// CPU 0, the client native and pinned to CPU 1. In the VM tests the
// laptop's stiefelOS serves on one emulated CPU, where every instruction of
// user space (our JavaScript, V8, OpenSSL) costs many times what it does on
// hardware while system calls run at host speed in qemu-user; this puts the
// same weight on each server's user-space work per request, side by side
// with the peer under the same emulation. qemu-user cannot profile
// (`node --cpu-prof` and `--prof` die with SIGSEGV under it).
import { execFileSync } from 'node:child_process';

export const EMULATOR = 'qemu-x86_64';

function absolute(file: string): string {
  if (file.startsWith('/')) return file;
  try {
    return execFileSync('sh', ['-c', `command -v ${file}`], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`--emulate: ${file} is not installed (${file === EMULATOR ? 'qemu-user' : 'its package'}): run scripts/setup.sh`);
  }
}

/** The words that start `file` emulated on `cpu` (just `file` when `on` is false), for a shell line. */
export function emulatedWords(on: boolean, cpu: number, file: string): string[] {
  return on ? ['taskset', '-c', String(cpu), absolute(EMULATOR), '-cpu', 'max', absolute(file)] : [file];
}

/** The command that runs `file args` emulated on `cpu`, or as it is when `on` is false. */
export function emulated(on: boolean, cpu: number, file: string, args: string[]): [string, string[]] {
  const [cmd, ...rest] = emulatedWords(on, cpu, file);
  return [cmd!, [...rest, ...args]];
}

/** The command that runs `file args` natively on `cpu`, or as it is when `on` is false. */
export function pinned(on: boolean, cpu: number, file: string, args: string[]): [string, string[]] {
  return on ? ['taskset', ['-c', String(cpu), file, ...args]] : [file, args];
}
