// The laptop notices a silent desktop (cable out or desktop off) from the
// bytes its WireGuard end received, and notices it again when it is back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SilenceTracker, watchSilence, type SilenceEvent } from '../../src/laptop/silence-watch';
import { receivedFrom } from '../../src/wireguard/link';

test('wg show IF transfer: the received bytes of the one peer asked for', () => {
  const text = 'AAAA+key=\t1234\t5678\nBBBB+key=\t99\t0\n';
  assert.equal(receivedFrom(text, 'BBBB+key='), 99);
  assert.equal(receivedFrom(text, 'AAAA+key='), 1234);
  assert.equal(receivedFrom(text, 'CCCC+key='), undefined);
  assert.equal(receivedFrom('', 'AAAA+key='), undefined);
  assert.equal(receivedFrom('AAAA+key=\tgarbage\t1\n', 'AAAA+key='), undefined);
});

test('silence: reported once when the count stands still for the limit, and the return with how long it lasted', () => {
  const t = new SilenceTracker(30_000);
  const events: Array<[number, SilenceEvent | undefined]> = [];
  const feed = (count: number | undefined, at: number) => events.push([at, t.feed(count, at)]);
  feed(100, 0);
  feed(200, 5_000); // traffic
  feed(200, 10_000);
  feed(200, 30_000); // 25 s still: not yet
  feed(200, 35_000); // 30 s: silent
  feed(200, 40_000); // still silent: said once
  feed(232, 95_000); // a keepalive: back after 90 s
  feed(232, 100_000);
  assert.deepEqual(
    events.filter(([, e]) => e !== undefined),
    [
      [35_000, { kind: 'silent', forMs: 30_000 }],
      [95_000, { kind: 'heard', afterMs: 90_000 }],
    ],
  );
  assert.equal(t.silent, false);
});

test('silence: no peer resets, and the first count is no return', () => {
  const t = new SilenceTracker(10);
  assert.equal(t.feed(undefined, 0), undefined);
  assert.equal(t.feed(5, 1), undefined);
  assert.deepEqual(t.feed(5, 11), { kind: 'silent', forMs: 10 });
  assert.equal(t.feed(undefined, 12), undefined);
  assert.equal(t.feed(5, 13), undefined, 'a new peer starts afresh');
  assert.equal(t.silent, false);
});

test('watchSilence polls until stopped and survives a failing read', async () => {
  let calls = 0;
  const events: SilenceEvent[] = [];
  const ac = new AbortController();
  watchSilence(
    {
      received: async () => {
        calls++;
        if (calls === 2) throw new Error('wg failed');
        return 7;
      },
      intervalMs: 5,
      silentAfterMs: 20,
      onEvent: (e) => events.push(e),
    },
    { signal: ac.signal },
  );
  await new Promise((r) => setTimeout(r, 120));
  ac.abort();
  const after = calls;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(calls, after, 'no polling after abort');
  assert.ok(calls >= 5);
  assert.equal(events[0]?.kind, 'silent');
});
