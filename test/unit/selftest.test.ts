import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatIpv6, parseIfInet6, SELFTEST_OK, usableLinkLocal } from '../../src/selftest/checks';
import { PROGRAM_CHECKS, runSelftest, type RunResult, type SelftestSystem } from '../../src/selftest/run';
import { runCli } from '../helpers/cli';

// /proc/net/if_inet6 as Linux writes it (this host's, plus a tentative one).
const IF_INET6 = `fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fe80000000000000505400fffe123456 05 40 20 c0     eth1
`;

test('/proc/net/if_inet6 is parsed; only finished link-local addresses count', () => {
  const all = parseIfInet6(IF_INET6);
  assert.equal(all.length, 4);
  assert.deepEqual(all[0], { address: 'fd00::2', ifindex: 4, prefixLength: 64, scope: 0, flags: 0x82, ifname: 'eth0' });
  assert.equal(all[1]!.address, '::1');
  assert.deepEqual(usableLinkLocal(all).map((a) => `${a.ifname} ${a.address}`), ['eth0 fe80::fc:ff:fe00:1']);
});

test('property: IPv6 text form agrees with the WHATWG URL serializer (RFC 5952)', () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), { minLength: 8, maxLength: 8 }), (groups) => {
      const hex = groups.map((g) => g.toString(16).padStart(4, '0')).join('');
      const viaUrl = new URL(`http://[${groups.map((g) => g.toString(16)).join(':')}]/`).hostname.slice(1, -1);
      assert.equal(formatIpv6(hex), viaUrl);
    }),
    { numRuns: 2000 },
  );
});

interface FakeState {
  fail?: Record<string, RunResult>;
  nics?: string[];
  /** Addresses appear after this many polls. */
  addressAfter?: number;
  tentative?: boolean;
}

function fakeSystem(state: FakeState): SelftestSystem & { calls: string[] } {
  let clock = 0;
  let polls = 0;
  const up = new Set<string>();
  const loaded = new Set<string>();
  const calls: string[] = [];
  return {
    calls,
    async run(file, args) {
      calls.push([file, ...args].join(' '));
      const failed = state.fail?.[file];
      if (failed) return failed;
      if (file === 'modprobe' && args[0]) loaded.add(args[0]);
      if (file === 'ip' && args[1] === 'set') up.add(args[3]!);
      return { code: 0, stdout: `${file} version 1.0\n`, stderr: '' };
    },
    async readFile(path) {
      if (path === '/proc/uptime') return '12.34 10.00\n';
      if (path !== '/proc/net/if_inet6') throw new Error(`unexpected ${path}`);
      polls++;
      if (polls <= (state.addressAfter ?? 0)) return '';
      const flags = state.tentative ? 'c0' : '80';
      return [...up].map((n, i) => `fe80000000000000505400fffe12345${i} 0${i + 2} 40 20 ${flags} ${n}\n`).join('');
    },
    async readdir(path) {
      assert.equal(path, '/sys/class/net');
      return ['lo', ...(state.nics ?? [])];
    },
    async exists(path) {
      const m = /^\/sys\/module\/(\w+)$/.exec(path);
      if (m) return loaded.has(m[1]!);
      if (path === '/sys/block/nbd0') return loaded.has('nbd');
      return /^\/sys\/class\/net\/[^/]+\/device$/.test(path);
    },
    async sleep(ms) {
      clock += ms;
    },
    now: () => clock,
  };
}

async function run(state: FakeState): Promise<{ ok: boolean; lines: string[]; calls: string[] }> {
  const sys = fakeSystem(state);
  const lines: string[] = [];
  const ok = await runSelftest(sys, { nodeVersion: 'v20.0.0', nodePath: '/usr/bin/node', nicTimeoutMs: 5000 }, (l) => lines.push(l));
  return { ok, lines, calls: sys.calls };
}

test('everything present: one ok line per check, then STIEFEL-SELFTEST-OK', async () => {
  const r = await run({ nics: ['eth0'], addressAfter: 3 });
  assert.equal(r.ok, true);
  assert.equal(r.lines.at(-1), SELFTEST_OK);
  assert.equal(r.lines.filter((l) => l.startsWith('selftest: ok ')).length, 1 + PROGRAM_CHECKS.length + 2 + 1);
  assert.ok(r.lines.includes('selftest: ok   nic: eth0 fe80::5054:ff:fe12:3450'));
  assert.ok(r.lines.includes('selftest: uptime 12.34 s'));
  assert.ok(r.calls.includes('ip link add stf-selftest type wireguard'));
  assert.ok(r.calls.includes('ip link set dev eth0 up'));
});

test('a program whose libraries do not resolve fails, and the verdict names it', async () => {
  const r = await run({
    nics: ['eth0'],
    fail: { wg: { code: 127, stdout: '', stderr: 'wg: error while loading shared libraries: libfoo.so.1: cannot open shared object file\n' } },
  });
  assert.equal(r.ok, false);
  assert.ok(r.lines.includes('selftest: FAIL wg: exit 127: wg: error while loading shared libraries: libfoo.so.1: cannot open shared object file'));
  assert.equal(r.lines.at(-1), 'STIEFEL-SELFTEST-FAILED: wg');
});

test('no NIC, or only tentative addresses, fail the nic check after the timeout', async () => {
  const none = await run({ nics: [] });
  assert.equal(none.lines.at(-1), 'STIEFEL-SELFTEST-FAILED: nic');
  assert.ok(none.lines.includes('selftest: FAIL nic: no network interface appeared within 5 s (driver missing?)'));
  const tentative = await run({ nics: ['eth0'], tentative: true });
  assert.equal(tentative.lines.at(-1), 'STIEFEL-SELFTEST-FAILED: nic');
});

test('a module that does not load fails its check', async () => {
  const r = await run({ nics: ['eth0'], fail: { modprobe: { code: 1, stdout: '', stderr: "modprobe: FATAL: Module nbd not found in directory /lib/modules/6.1.0-56-amd64\n" } } }); // made-up release
  assert.equal(r.lines.at(-1), 'STIEFEL-SELFTEST-FAILED: modprobe, module nbd, module wireguard');
});

test('stiefelctl selftest refuses to run outside stiefelOS, in one line', async () => {
  const r = await runCli(['selftest']);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^stiefelctl selftest: this is not stiefelOS \(\/etc\/stiefelos\/release is missing\): .* boot the image with stiefel\.role=selftest\n$/);
});
