import { test } from 'node:test';
import assert from 'node:assert/strict';
import { busyMessage, ClientLock, peerHost } from '../../src/laptop/client-lock';

function lock() {
  let t = 1_000_000;
  const l = new ClientLock({ handoffMs: 60_000, idleMs: 30_000, now: () => t });
  return { l, advance: (ms: number) => (t += ms) };
}
const A = 'fe80::a%eth0';
const B = 'fe80::b%eth1';

test('one payload client at a time; the second is told who holds the server', () => {
  const { l } = lock();
  assert.deepEqual(l.beginRequest(A, 's1'), { ok: true });
  const d = l.beginRequest(B, 's2');
  assert.equal(d.ok, false);
  if (!d.ok) assert.deepEqual([d.owner.host, d.owner.state], [A, 'payload']);
  assert.ok(l.busyFor(B) && !l.busyFor(A) && l.busyFor());
});

test('a payload client that went quiet is forgotten after idleMs, not while a request is open', () => {
  const { l, advance } = lock();
  l.beginRequest(A, 's1');
  advance(100_000);
  assert.equal(l.beginRequest(B, 's2').ok, false, 'open request keeps it');
  l.endRequest(A);
  advance(29_000);
  assert.equal(l.beginRequest(B, 's2').ok, false);
  advance(2_000);
  assert.equal(l.beginRequest(B, 's2').ok, true);
  assert.equal(l.owner()?.host, B);
});

test('after handoff another host is refused until the handoff times out', () => {
  const { l, advance } = lock();
  l.beginRequest(A, 's1');
  l.endRequest(A);
  l.handOff(A);
  assert.equal(l.state, 'handoff');
  advance(59_000);
  assert.equal(l.beginRequest(B, 's2').ok, false);
  // A late request of the same session does not undo the handoff.
  assert.equal(l.beginRequest(A, 's1').ok, true);
  l.endRequest(A);
  assert.equal(l.state, 'handoff');
  advance(2_000);
  assert.equal(l.beginRequest(B, 's2').ok, true);
});

test('during handoff the disk is for the same address or the one handed out; then it is exclusive', () => {
  const { l } = lock();
  l.beginRequest(A, 's1');
  const booted = '10.83.70.2';
  l.expectDiskPeer(booted);
  l.endRequest(A);
  l.handOff(A);
  const stranger = l.admitDisk(B);
  assert.equal(stranger.ok, false, 'another desktop cannot take the disk meanwhile');
  if (!stranger.ok) assert.match(busyMessage(stranger.owner), /^the laptop is busy: it is waiting for the disk connection of the desktop at fe80::a%eth0 \(since \d\d:\d\d:\d\d UTC\); only one desktop at a time$/);
  assert.deepEqual(l.admitDisk(booted), { ok: true });
  assert.deepEqual(l.admitDisk(booted), { ok: true }, 'a second connection of the same host');
  assert.equal(l.admitDisk(B).ok, false);
  assert.equal(l.beginRequest(B, 's2').ok, false);
  assert.equal(l.diskClosed(booted, true), false, 'not its last connection');
  assert.equal(l.state, 'disk');
  assert.equal(l.diskClosed(booted, true), true, 'its last, and it let the disk go (a goodbye, NBD_CMD_DISC)');
  assert.equal(l.state, 'free');
  assert.equal(l.admitDisk(B).ok, true);
  // The same desktop's own address is admitted during its handoff too.
  const second = lock();
  second.l.beginRequest(A, 's1');
  second.l.endRequest(A);
  second.l.handOff(A);
  assert.equal(second.l.admitDisk(A).ok, true);
});

test('a desktop that left without letting the disk go keeps it: it may connect again or boot again, nobody else gets in', () => {
  const { l, advance } = lock();
  l.beginRequest(A, 's1');
  const tunnel = 'fd53::2';
  l.expectDiskPeer(tunnel);
  l.endRequest(A);
  l.handOff(A);
  assert.equal(l.admitDisk(tunnel).ok, true);
  assert.equal(l.diskClosed(tunnel, false), true, 'its last connection ended: a reset, or a connection its kernel gave up');
  assert.equal(l.state, 'disk');
  advance(3_600_000);
  for (const refused of [l.admitDisk(B), l.beginRequest(B, 's2')]) {
    assert.equal(refused.ok, false, 'another desktop is refused, however long it waits');
    if (!refused.ok) {
      assert.equal(refused.owner.held, true);
      assert.match(busyMessage(refused.owner), /^the laptop is busy: its disk is held for the desktop at fd53::2, which left without letting it go and may still have it mounted \(since \d\d:\d\d:\d\d UTC\); only that desktop may boot from it, until the laptop returns to its own OS \(R on its console\)$/);
    }
  }
  // The same desktop reconnects (stiefel-nbd-reconnect): the disk is its own again, held no more.
  assert.equal(l.admitDisk(tunnel).ok, true);
  assert.equal(l.owner()?.held, undefined);
  assert.equal(l.diskClosed(B, false), false, "another host's close changes nothing");
  l.diskClosed(tunnel, false);
  // Or it boots again: a payload request from the address it booted from (its NIC's) takes the lock over.
  assert.deepEqual(l.beginRequest(A, 's3'), { ok: true });
  assert.deepEqual(l.owner() && [l.owner()!.host, l.owner()!.state, l.owner()!.held], [A, 'payload', undefined]);
});

test('after the handoff times out, the disk is anyone\'s again', () => {
  const { l, advance } = lock();
  l.beginRequest(A, 's1');
  l.endRequest(A);
  l.handOff(A);
  advance(61_000);
  assert.equal(l.admitDisk(B).ok, true);
});

test('a new session from the same host replaces the old one', () => {
  const { l } = lock();
  l.beginRequest(A, 's1');
  assert.deepEqual(l.beginRequest(A, 's2'), { ok: true, replacedSession: 's1' });
});

test('peer hosts drop the IPv4-mapped prefix', () => {
  assert.equal(peerHost('::ffff:10.0.0.1'), '10.0.0.1');
  assert.equal(peerHost('fe80::1%eth0'), 'fe80::1%eth0');
  assert.equal(peerHost(undefined), 'unknown');
});
