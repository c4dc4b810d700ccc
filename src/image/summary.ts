// The text build-image prints when it is done. Pure.
import type { BuildSummary } from './build';

export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
}

export function formatSummary(s: BuildSummary): string {
  const rows: Array<[string, string]> = [];
  rows.push(['kernel', `${s.kernel.release} from ${s.kernel.source}`]);
  rows.push([
    'modules',
    `${s.modules.count} (+${s.modules.builtin} wanted ones built in${s.modules.excluded > 0 ? `, ${s.modules.excluded} excluded` : ''}), firmware files: ${s.modules.firmware}` +
      (s.modules.firmwareMissing.length > 0 ? ` (${s.modules.firmwareMissing.length} declared but not installed)` : ''),
  ]);
  rows.push(['programs', s.programs.map((p) => p.name).join(', ') + `; ${s.libraries.length} shared libraries`]);
  for (const st of s.stripped) rows.push(['stripped', `${st.path}: ${formatBytes(st.before)} -> ${formatBytes(st.after)}`]);
  rows.push(['config', s.config ?? 'none embedded (--config)']);
  rows.push(['secret', s.secret ? 'embedded (mode 0600)' : 'none embedded (--secret)']);
  const width = Math.max(...rows.map(([k]) => k.length), ...s.parts.map((p) => p.name.length + 2));
  const lines = [`stiefelOS for kernel ${s.kernel.release} built in ${s.seconds.toFixed(1)} s`];
  for (const [k, v] of rows) lines.push(`  ${k.padEnd(width)}  ${v}`);
  lines.push('  initrd.img contents (unpacked):');
  for (const p of s.parts) lines.push(`    ${p.name.padEnd(width)}${formatBytes(p.bytes).padStart(10)}  ${p.files} files`);
  lines.push(`    ${'total'.padEnd(width)}${formatBytes(s.initrd.unpackedBytes).padStart(10)}  ${s.initrd.entries} entries (cpio)`);
  const comp = s.initrd.compression === 'none' ? 'uncompressed' : `${s.initrd.compression} -${s.initrd.level}`;
  lines.push(`  ${s.kernel.path}  ${formatBytes(s.kernel.bytes)}  sha256 ${s.kernel.sha256}`);
  lines.push(`  ${s.initrd.path}  ${formatBytes(s.initrd.bytes)} (${comp}: ${s.initrd.compressionReason})  sha256 ${s.initrd.sha256}`);
  lines.push(`  total ${formatBytes(s.totalBytes)}`);
  return `${lines.join('\n')}\n`;
}
