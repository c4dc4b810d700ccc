// The guard against tests that only pass on the machine they were written on:
// a kernel release spelled where the host's own is compared.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { findHostFactLiterals, hostKernelReleases, HOST_FACT_FIX, projectTestSources } from '../helpers/host-facts';

// Built, not spelled: this file must not trip the guard it tests.
const rel = (n: number): string => ['6.1.0', String(n), 'amd64'].join('-');

test('the guard finds the host release anywhere, and any release in a test that reads the host kernel unless marked made-up', () => {
  const files = [
    { path: 'a.test.ts', text: `const k = debianKernel();\nassert.equal(k.release, '${rel(56)}');\n` },
    { path: 'b.test.ts', text: `// pure parser input\nassert.equal(parse('vmlinuz-${rel(18)}'), '${rel(18)}');\n` },
    { path: 'c.test.ts', text: `const k = debianKernel();\nconst UNAME = '${rel(56)}'; // made-up release: compared with nothing on the host\n` },
    { path: 'd.sh', text: `ls /boot/vmlinuz-${rel(99)}\n` },
  ];
  const found = findHostFactLiterals(files, [rel(99)]);
  assert.deepEqual(
    found.map((f) => `${f.path}:${f.line} ${f.literal}`),
    [`a.test.ts:2 ${rel(56)}`, `d.sh:1 ${rel(99)}`],
  );
});

test("no test, benchmark or script spells this machine's kernel release or compares a fixed one with the host's", () => {
  const root = join(__dirname, '..', '..');
  const sources = projectTestSources(root);
  assert.ok(sources.length > 50, `${sources.length} files scanned`);
  // Literals written inside regular expressions (6\.1\.0-…) count as well.
  const unescaped = sources.map((f) => ({ path: f.path, text: f.text.replace(/\\\./g, '.') }));
  const found = findHostFactLiterals(unescaped, hostKernelReleases());
  assert.deepEqual(
    found.map((f) => `${f.path}:${f.line}: ${f.why} (${f.literal})`),
    [],
    `these tests would fail on a machine with another kernel: ${HOST_FACT_FIX}; a release invented for a test and compared with nothing on the host goes on a line marked 'made-up release'`,
  );
});
