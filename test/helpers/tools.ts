// Tests that need an external tool call requireTool(): a missing tool is a
// failure that names the fix, never a silent pass. scripts/setup.sh (run by
// `npm test`'s pretest step) installs every tool the tests use.
import { execFileSync } from 'node:child_process';

export function hasTool(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function requireTool(name: string): string {
  const path = execFileSync('sh', ['-c', `command -v ${name} || true`], { encoding: 'utf8' }).trim();
  if (!path) throw new Error(`${name} is not installed: run 'sudo scripts/setup.sh' (npm test does this first)`);
  return path;
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('this test drives kernel features and needs root: run it with sudo');
}
