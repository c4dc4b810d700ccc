// The floor of the end-to-end boot: the same laptop disk image booted
// locally in the same emulator, its disk attached as virtio, with the
// desktop's memory and CPUs, and timed from QEMU's start to the same marker
// (the laptop OS's root writable). Like the end-to-end desktop, the kernel
// is started by -kernel (no firmware, no boot loader): the laptop OS's own
// kernel, initramfs and command line, read out of its /boot and
// /etc/kernel/cmdline. `npm run bench:e2e -- --compare local`.
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI } from './cli';
import { e2eSecret, withImagePartition } from './e2e';
import { buildLaptopImage, type LaptopFamily } from './laptop-image';
import { startVm, type QemuVm } from './qemu';

const run = promisify(execFile);

export interface LocalBootOptions {
  family: LaptopFamily;
  cacheDir: string;
  /** The desktop's, for a fair floor. */
  memoryMiB?: number;
  timeScale?: number;
  log?: (line: string) => void;
}

export interface LocalBootResult {
  /** From QEMU's start to the kernel's first line, and on to the marker. */
  stages: Array<{ name: string; seconds: number }>;
  totalSeconds: number;
}

export async function bootLaptopLocally(options: LocalBootOptions): Promise<LocalBootResult> {
  const log = options.log ?? (() => undefined);
  const scale = options.timeScale ?? 1;
  const laptop = await buildLaptopImage({ family: options.family, cacheDir: options.cacheDir, stiefelctl: CLI, secret: e2eSecret(options.cacheDir), log });
  const work = mkdtempSync(join(tmpdir(), 'stf-local-'));
  let vm: QemuVm | undefined;
  try {
    const disk = join(work, 'laptop.img');
    await run('cp', ['--sparse=always', laptop.path, disk]);
    const kernel = join(work, 'vmlinuz');
    const initrd = join(work, 'initrd.img');
    await withImagePartition(disk, laptop.boot, (dir) => {
      copyFileSync(join(dir, `vmlinuz-${laptop.kernelVersion}`), kernel);
      copyFileSync(join(dir, `initrd.img-${laptop.kernelVersion}`), initrd);
    });
    const cmdline = await withImagePartition(disk, laptop.root, (dir) => readFileSync(join(dir, 'etc/kernel/cmdline'), 'utf8').trim());
    const token = `local${Date.now().toString(16)}`;
    const started = Date.now();
    vm = startVm({
      name: `stf-local-${options.family}`,
      kernel,
      initrd,
      append: `${cmdline} panic=-1 stiefel_e2e.token=${token}`,
      memoryMiB: options.memoryMiB ?? 2048,
      disks: [{ path: disk, format: 'raw' }],
    });
    log(`the laptop image booted locally: its kernel ${laptop.kernelVersion}, its disk as virtio, command line: ${cmdline}`);
    await vm.waitFor(/Linux version \d/, 120_000 * scale);
    const kernelAt = Date.now();
    await vm.waitFor(new RegExp(`STIEFEL-E2E-MARKER ${token}`), 400_000 * scale);
    const now = Date.now();
    const stages = [
      { name: 'QEMU to the kernel', seconds: (kernelAt - started) / 1000 },
      { name: 'kernel, initramfs and boot to the marker', seconds: (now - kernelAt) / 1000 },
    ];
    log(`marker reached ${((now - started) / 1000).toFixed(1)} s after QEMU started`);
    return { stages, totalSeconds: (now - started) / 1000 };
  } catch (err) {
    if (vm) log(`--- last lines of the console ---\n${vm.tail(40)}`);
    throw err;
  } finally {
    await vm?.stop().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}
