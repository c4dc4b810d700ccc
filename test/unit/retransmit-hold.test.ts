// The tunnel's retransmissions held while its link has no carrier
// (src/netif/retransmit-hold.ts): when to hold and release, the tc lines,
// the carrier read from a directory shaped like /sys/class/net (the real
// kernel's side is the net layer's test/net/retransmit-hold.test.ts), and
// what the two ends are told by the files they read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HoldTracker, holdCommand, holdRetransmitsWhileUnplugged, releaseCommand, showsHold, type HoldEvent } from '../../src/netif/retransmit-hold';
import { parseGoodbyeConf } from '../../src/laptop/laptop-watch';
import { endpointLinkOf } from '../../src/wireguard/link';

test('hold on carrier loss of the link, release on its return, with how long it lasted; nothing while unknown', () => {
  const t = new HoldTracker();
  const events: Array<HoldEvent | undefined> = [];
  events.push(t.feed('eth0', true, 0));
  events.push(t.feed(undefined, false, 100)); // no link known: nothing to hold
  events.push(t.feed('eth0', undefined, 200)); // carrier unreadable (link down): not a pulled cable
  events.push(t.feed('eth0', false, 1_000));
  assert.equal(t.held, true);
  events.push(t.feed('eth0', false, 30_000)); // still out: held once
  events.push(t.feed('eth0', true, 61_000));
  assert.equal(t.held, false);
  events.push(t.feed('eth0', true, 62_000));
  assert.deepEqual(events.filter(Boolean), [
    { kind: 'hold', link: 'eth0' },
    { kind: 'release', link: 'eth0', afterMs: 60_000 },
  ]);
  // The tunnel moving to another link, or its link gone, ends a hold too.
  const u = new HoldTracker();
  u.feed('eth0', false, 0);
  assert.deepEqual(u.feed('eth1', false, 5_000), { kind: 'release', link: 'eth0', afterMs: 5_000 });
  u.feed('eth1', false, 6_000);
  assert.deepEqual(u.feed(undefined, undefined, 7_000), { kind: 'release', link: 'eth1', afterMs: 1_000 });
});

test('the tc lines: a queue that drops every packet, and back to the default; a hold seen in tc qdisc show', () => {
  assert.equal(holdCommand('stiefelwg'), 'qdisc replace dev stiefelwg root pfifo limit 0');
  assert.equal(releaseCommand('stiefelwg'), 'qdisc del dev stiefelwg root');
  assert.equal(showsHold('qdisc pfifo 8001: root refcnt 2 limit 0p\n'), true);
  assert.equal(showsHold('qdisc pfifo 8001: root refcnt 2 limit 1000p\n'), false);
  assert.equal(showsHold('qdisc noqueue 0: root refcnt 2 \n'), false);
  assert.equal(showsHold(''), false);
});

test('a hold left in place (by a watch that died) is released at the first reading with carrier, kept without', () => {
  const t = new HoldTracker({ link: 'stiefellink', since: 0 });
  assert.equal(t.held, true);
  assert.equal(t.feed('stiefellink', false, 1_000), undefined);
  assert.deepEqual(t.feed('stiefellink', true, 2_000), { kind: 'release', link: 'stiefellink', afterMs: 2_000 });
});

test('the watch reads the carrier from sysfs, sends tc the hold and the release, and releases when stopped', async (t) => {
  const sys = mkdtempSync(join(tmpdir(), 'stf-hold-'));
  t.after(() => rmSync(sys, { recursive: true, force: true }));
  mkdirSync(join(sys, 'stiefellink'));
  const carrier = (v: string): void => writeFileSync(join(sys, 'stiefellink', 'carrier'), `${v}\n`);
  carrier('1');
  const sent: string[] = [];
  const events: HoldEvent[] = [];
  const abort = new AbortController();
  const wait = async (what: () => boolean): Promise<void> => {
    for (let i = 0; i < 200 && !what(); i++) await new Promise((r) => setTimeout(r, 10));
    assert.ok(what(), `in time: ${JSON.stringify(sent)}`);
  };
  const hold = holdRetransmitsWhileUnplugged(
    { tunnel: 'stiefelwg', link: () => 'stiefellink', tc: { send: (l) => sent.push(l) }, sysClassNet: sys, intervalMs: 10, onEvent: (e) => events.push(e) },
    { signal: abort.signal },
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(sent, [], 'nothing while the carrier is there');
  carrier('0');
  await wait(() => sent.length === 1);
  assert.deepEqual(sent, ['qdisc replace dev stiefelwg root pfifo limit 0']);
  carrier('1');
  await wait(() => sent.length === 2);
  assert.equal(sent[1], 'qdisc del dev stiefelwg root');
  assert.deepEqual(events.map((e) => e.kind), ['hold', 'release']);
  carrier('0');
  await wait(() => sent.length === 3);
  hold.stop();
  assert.deepEqual(sent.slice(3), ['qdisc del dev stiefelwg root'], 'a hold does not outlive the watch');
  hold.stop();
  abort.abort();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(sent.length, 4, 'nothing after stop');
});

test("goodbye.conf names the desktop's link and tunnel for the watch; either missing or malformed: no hold", () => {
  const base = `STIEFEL_GOODBYE_HOST=fd3a::1\nSTIEFEL_GOODBYE_PORT=4645\nSTIEFEL_GOODBYE_TOKEN=${'a'.repeat(64)}\n`;
  assert.deepEqual(parseGoodbyeConf(`${base}STIEFEL_LINK_IFNAME=stiefellink\nSTIEFEL_TUNNEL_IFNAME=stiefelwg\n`)?.link, { link: 'stiefellink', tunnel: 'stiefelwg' });
  assert.equal(parseGoodbyeConf(`${base}STIEFEL_LINK_IFNAME=stiefellink\nSTIEFEL_TUNNEL_IFNAME=\n`)?.link, undefined, 'no tunnel (no WireGuard)');
  assert.equal(parseGoodbyeConf(`${base}STIEFEL_LINK_IFNAME=a/b\nSTIEFEL_TUNNEL_IFNAME=stiefelwg\n`)?.link, undefined);
  assert.equal(parseGoodbyeConf(base)?.link, undefined);
});

test("wg show IF endpoints: the link of the peer's link-local endpoint", () => {
  const text = 'AAAA+key=\t[fe80::5054:ff:fede:2%eth0]:51820\nBBBB+key=\t192.0.2.7:51820\nCCCC+key=\t(none)\n';
  assert.equal(endpointLinkOf(text, 'AAAA+key='), 'eth0');
  assert.equal(endpointLinkOf(text, 'BBBB+key='), undefined, 'no zone: the link is not known');
  assert.equal(endpointLinkOf(text, 'CCCC+key='), undefined);
  assert.equal(endpointLinkOf(text, 'DDDD+key='), undefined);
});
