// Text files shipped with stiefelctl (shell scripts, unit files, templates)
// live under assets/. The bundle (scripts/build.mjs) embeds them all as
// STIEFEL_BUNDLED_ASSETS; when running from source they are read from disk.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

declare const STIEFEL_BUNDLED_ASSETS: Record<string, string> | undefined;

export function readAsset(name: string): string {
  if (typeof STIEFEL_BUNDLED_ASSETS !== 'undefined') {
    const text = STIEFEL_BUNDLED_ASSETS[name];
    if (text === undefined) throw new Error(`asset ${name} is not in the bundle`);
    return text;
  }
  return readFileSync(join(__dirname, '..', 'assets', name), 'utf8');
}
