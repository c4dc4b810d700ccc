// Builds disk images for tests, without mounting anything and without root:
// a sparse file partitioned with sfdisk (GPT or MBR), each partition's file
// system made in a temporary file (mke2fs -d fills ext4 from a directory;
// mkfs.vfat + mcopy fill FAT) and copied into place with dd. Also builds a
// real Unified Kernel Image from the systemd-boot stub with objcopy.
//
//   const img = await buildDiskImage(join(dir, 'disk.img'), {
//     scheme: 'gpt',
//     partitions: [
//       { sizeMiB: 8, type: 'esp', fs: 'vfat', files: { 'EFI/Linux/x.efi': bytes } },
//       { sizeMiB: 16, fs: 'ext4', uuid: '2f3a1c9e-…', files: { 'grub/grub.cfg': text } },
//     ],
//   });
//   img.partitions[1].offset  // bytes
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, closeSync, openSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { requireTool } from './tools';

export type PartitionKind = 'linux' | 'esp' | 'lvm' | 'luks' | 'swap' | 'xbootldr';

export interface PartitionSpec {
  sizeMiB: number;
  /** Partition type (default linux). */
  type?: PartitionKind;
  /** File system to make in it (default: none, the bytes stay zero). */
  fs?: 'ext4' | 'vfat';
  /** Files to put in it, path → contents (directories are made as needed). */
  files?: Record<string, string | Uint8Array>;
  /** ext4: file system UUID and label. */
  uuid?: string;
  label?: string;
}

export interface DiskImageSpec {
  scheme: 'gpt' | 'mbr';
  partitions: PartitionSpec[];
}

export interface BuiltDiskImage {
  path: string;
  size: number;
  partitions: { number: number; offset: number; size: number }[];
}

const MiB = 1024 * 1024;
const GPT_TYPES: Record<PartitionKind, string> = {
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  lvm: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  luks: 'CA7D7CCB-63ED-4C53-861C-1742536059CC',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  xbootldr: 'BC13C2FF-59E6-4262-A352-B275FD6F7172',
};
const MBR_TYPES: Record<PartitionKind, string> = { linux: '83', esp: 'ef', lvm: '8e', luks: '83', swap: '82', xbootldr: 'ea' };

function writeTree(root: string, files: Record<string, string | Uint8Array>): void {
  for (const [path, data] of Object.entries(files)) {
    const full = join(root, path);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, data);
  }
}

function makeFilesystem(spec: PartitionSpec, work: string, index: number): string | null {
  if (!spec.fs) return null;
  const file = join(work, `part${index}.img`);
  const tree = join(work, `tree${index}`);
  mkdirSync(tree, { recursive: true });
  writeTree(tree, spec.files ?? {});
  if (spec.fs === 'ext4') {
    requireTool('mke2fs');
    const args = ['-q', '-F', '-t', 'ext4', '-b', '4096', '-d', tree];
    if (spec.uuid) args.push('-U', spec.uuid);
    if (spec.label) args.push('-L', spec.label);
    // Fixed hash seed and timestamps keep the file system reproducible.
    execFileSync('mke2fs', [...args, '-E', 'hash_seed=2f3a1c9e-5b7d-4e21-9a60-3c1b8d2e7f45', file, `${spec.sizeMiB * 1024}k`], { stdio: 'pipe', env: { ...process.env, E2FSPROGS_FAKE_TIME: '1700000000' } });
    return file;
  }
  requireTool('mkfs.vfat');
  requireTool('mcopy');
  execFileSync('mkfs.vfat', ['-C', file, String(spec.sizeMiB * 1024)], { stdio: 'pipe' });
  const entries = Object.keys(spec.files ?? {});
  if (entries.length) {
    // mtools copies without mounting; -s recursive, -o overwrite, -Q quit on error.
    const top = [...new Set(entries.map((p) => p.split('/')[0]!))].map((n) => join(tree, n));
    execFileSync('mcopy', ['-s', '-o', '-Q', '-i', file, ...top, '::/'], { stdio: 'pipe', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  }
  return file;
}

export function buildDiskImage(path: string, spec: DiskImageSpec): BuiltDiskImage {
  requireTool('sfdisk');
  const work = mkdtempSync(join(tmpdir(), 'stf4-img-'));
  try {
    const partitions: BuiltDiskImage['partitions'] = [];
    let next = 1 * MiB;
    spec.partitions.forEach((p, i) => {
      partitions.push({ number: i + 1, offset: next, size: p.sizeMiB * MiB });
      next += p.sizeMiB * MiB;
    });
    // MBR disks with more than four partitions would need an extended one.
    if (spec.scheme === 'mbr' && spec.partitions.length > 4) throw new Error('buildDiskImage: at most 4 MBR partitions');
    const size = next + 1 * MiB; // room for GPT's backup header
    const fd = openSync(path, 'w');
    ftruncateSync(fd, size);
    closeSync(fd);
    const lines = [`label: ${spec.scheme === 'gpt' ? 'gpt' : 'dos'}`, 'unit: sectors', ''];
    spec.partitions.forEach((p, i) => {
      const t = (spec.scheme === 'gpt' ? GPT_TYPES : MBR_TYPES)[p.type ?? 'linux'];
      lines.push(`start=${partitions[i]!.offset / 512}, size=${partitions[i]!.size / 512}, type=${t}`);
    });
    execFileSync('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', path], { input: `${lines.join('\n')}\n`, stdio: ['pipe', 'pipe', 'pipe'] });
    spec.partitions.forEach((p, i) => {
      const fsFile = makeFilesystem(p, work, i);
      if (!fsFile) return;
      execFileSync('dd', [`if=${fsFile}`, `of=${path}`, 'bs=1M', `seek=${partitions[i]!.offset / MiB}`, 'conv=notrunc,sparse', 'status=none']);
    });
    return { path, size, partitions };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export const SYSTEMD_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';

/**
 * A Unified Kernel Image, made as the systemd documentation describes: the
 * stub plus .osrel, .cmdline, .uname, .linux and .initrd sections at
 * virtual addresses past the stub's own.
 */
export function buildUki(out: string, parts: { kernel: string; initrd: string; cmdline: string; osRelease: string; uname: string }): void {
  requireTool('objcopy');
  const work = mkdtempSync(join(tmpdir(), 'stf4-uki-'));
  try {
    const f = (name: string, text: string) => {
      const p = join(work, name);
      writeFileSync(p, text);
      return p;
    };
    execFileSync('objcopy', [
      '--add-section', `.osrel=${f('osrel', parts.osRelease)}`, '--change-section-vma', '.osrel=0x20000',
      '--add-section', `.cmdline=${f('cmdline', parts.cmdline)}`, '--change-section-vma', '.cmdline=0x30000',
      '--add-section', `.uname=${f('uname', parts.uname)}`, '--change-section-vma', '.uname=0x40000',
      '--add-section', `.linux=${parts.kernel}`, '--change-section-vma', '.linux=0x2000000',
      '--add-section', `.initrd=${parts.initrd}`, '--change-section-vma', '.initrd=0x4000000',
      SYSTEMD_STUB, out,
    ], { stdio: 'pipe' });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
