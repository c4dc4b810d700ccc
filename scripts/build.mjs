// Bundles src/stiefelctl.ts and everything it imports (npm packages included) into
// one file, dist/stiefelctl.js, that runs with plain `node`: it goes into the
// stiefelOS ramdisk, where there is no node_modules. Files under assets/ are
// embedded as strings (see src/assets.ts).
import { build } from 'esbuild';
import { readdirSync, readFileSync, statSync, chmodSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;

function collectAssets(dir, out = {}) {
  let names = [];
  try { names = readdirSync(dir).sort(); } catch { return out; }
  for (const name of names) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) collectAssets(path, out);
    else out[relative(join(root, 'assets'), path)] = readFileSync(path, 'utf8');
  }
  return out;
}

const outfile = join(root, 'dist', 'stiefelctl.js');
await build({
  entryPoints: [join(root, 'src', 'stiefelctl.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  minify: false,
  legalComments: 'none',
  sourcemap: false,
  banner: { js: '#!/usr/bin/env node' },
  define: { STIEFEL_BUNDLED_ASSETS: JSON.stringify(collectAssets(join(root, 'assets'))) },
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
