// Bundles src/stiefelctl.ts and everything it imports (npm packages included) into
// one file, dist/stiefelctl.js, that runs with plain `node`: it goes into the
// stiefelOS ramdisk, where there is no node_modules. Files under assets/ are
// embedded as strings (see src/assets.ts). The target is Node 18, the nodejs
// of Debian 12, which the .deb depends on: esbuild then refuses syntax that
// Node lacks. esbuild's metafile (dist/stiefelctl.meta.json) says which npm
// packages went in, for the package's copyright file.
import { build } from 'esbuild';
import { readdirSync, readFileSync, statSync, chmodSync, writeFileSync } from 'node:fs';
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
const result = await build({
  entryPoints: [join(root, 'src', 'stiefelctl.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node18',
  metafile: true,
  format: 'cjs',
  minify: false,
  legalComments: 'none',
  sourcemap: false,
  banner: { js: '#!/usr/bin/env node' },
  define: { STIEFEL_BUNDLED_ASSETS: JSON.stringify(collectAssets(join(root, 'assets'))) },
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
writeFileSync(join(root, 'dist', 'stiefelctl.meta.json'), `${JSON.stringify(result.metafile, null, 2)}\n`);
