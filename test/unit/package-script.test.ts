// The pure parts of scripts/package.ts: the Debian changelog's entries, and
// which npm packages esbuild's metafile says went into the bundle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundledPackageDirs, parseChangelog } from '../../scripts/package';
import { REPO_ROOT } from '../helpers/cli';

test('changelog: versions and dates of every entry, newest first', () => {
  const text = `stiefelsystem (0.2.0) unstable; urgency=medium

  * Second.

 -- A Maintainer <a@example.org>  Wed, 02 Dec 2026 10:00:00 +0100

stiefelsystem (0.1.0) unstable; urgency=low

  * First.

 -- A Maintainer <a@example.org>  Tue, 01 Dec 2025 09:30:00 +0000
`;
  assert.deepEqual(
    parseChangelog(text).map((e) => [e.version, e.date.toISOString()]),
    [
      ['0.2.0', '2026-12-02T09:00:00.000Z'],
      ['0.1.0', '2025-12-01T09:30:00.000Z'],
    ],
  );
  assert.throws(() => parseChangelog('x (1) unstable; urgency=low\n\n -- A <a@b>  someday\n'), /'someday' is not an RFC 2822 date \(date -R prints one\)/);
});

test("the project's changelog names package.json's version first", () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(parseChangelog(readFileSync(join(REPO_ROOT, 'packaging/deb/changelog'), 'utf8'))[0]?.version, pkg.version);
});

test('bundled packages: plain, scoped and nested node_modules, each once; sources of the project are not packages', () => {
  const inputs = Object.fromEntries(
    [
      'src/cli/main.ts',
      'node_modules/yaml/dist/index.js',
      'node_modules/yaml/dist/doc/Document.js',
      'node_modules/@noble/curves/ed25519.js',
      'node_modules/a/node_modules/b/index.js',
    ].map((k) => [k, {}]),
  );
  assert.deepEqual(bundledPackageDirs({ inputs }), ['node_modules/@noble/curves', 'node_modules/a/node_modules/b', 'node_modules/yaml']);
});
