// A distribution's node may be built with some of its own built-in modules
// left out of the binary and read at start-up from files of other packages
// (Debian's nodejs 18 reads cjs-module-lexer, undici and acorn from
// /usr/share/nodejs): node configured with --shared-builtin-NAME-path.
// Without those files in stiefelOS, that node aborts before running a line.
// Its build configuration (process.config) names them.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { StiefelError } from '../errors';

const run = promisify(execFile);

/**
 * The files a node's build configuration (process.config) names for its
 * built-in modules: `NODE_SHARED_BUILTIN_*_PATH=/file` among
 * target_defaults.defines (how node 18 records it), or
 * `node_shared_builtin_*_path` variables.
 */
export function sharedBuiltinPaths(config: { target_defaults?: { defines?: unknown }; variables?: Record<string, unknown> }): string[] {
  const out = new Set<string>();
  const defines = Array.isArray(config.target_defaults?.defines) ? (config.target_defaults!.defines as unknown[]) : [];
  for (const d of defines) {
    const m = typeof d === 'string' ? /^NODE_SHARED_BUILTIN_\w+_PATH=(\/.+)$/.exec(d) : null;
    if (m) out.add(m[1]!);
  }
  for (const [k, v] of Object.entries(config.variables ?? {})) {
    if (/^node_shared_builtin_.*_path$/.test(k) && typeof v === 'string' && v.startsWith('/')) out.add(v);
  }
  return [...out].sort();
}

/** Asks the node binary that stiefelOS carries which external files its built-in modules are in. */
export async function externalBuiltins(node: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await run(node, ['-e', 'process.stdout.write(JSON.stringify(process.config))'], { timeout: 60_000, maxBuffer: 4 * 1024 * 1024 }));
  } catch (err) {
    throw new StiefelError('E_IMAGE_NODE', `cannot run ${node} to read its build configuration: ${(err as Error).message.split('\n')[0]}`, { cause: err });
  }
  return sharedBuiltinPaths(JSON.parse(stdout) as Parameters<typeof sharedBuiltinPaths>[0]);
}
