// Memory budgets per connection and per server: when a connection may take
// on another request, when it resumes, and that a server holds at most its
// limit plus one request per connection however the clients behave.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryBudget } from '../../src/nbd/budget';

test('a connection alone: admitted below its limit, resumed at half of it', () => {
  const server = new MemoryBudget(Infinity);
  const c = server.connection(100);
  c.startSharing(100);
  c.take(60);
  assert.equal(c.admits(), true);
  c.take(60);
  assert.equal(c.admits(), false);
  let resumed = 0;
  c.waitUntilAdmitted(() => resumed++);
  c.give(60);
  assert.equal(resumed, 0, 'still above half');
  c.give(20);
  assert.equal(resumed, 1);
  c.give(10);
  assert.equal(resumed, 1, 'resumed once');
  assert.equal(c.peak, 120);
});

test('a request larger than the whole budget still goes when nothing else is held', () => {
  const c = new MemoryBudget(Infinity).connection(10);
  assert.equal(c.admits(), true);
  c.take(1000);
  assert.equal(c.admits(), false);
  let resumed = false;
  c.waitUntilAdmitted(() => (resumed = true));
  c.give(1000);
  assert.equal(resumed, true);
  assert.equal(c.admits(), true);
});

test('over the server limit, only connections above their fair share wait; a share freed wakes them', () => {
  const server = new MemoryBudget(100);
  const hog = server.connection(1000);
  const hog2 = server.connection(1000);
  const small = server.connection(1000);
  for (const c of [hog, hog2, small]) c.startSharing(1000);
  hog.take(60);
  hog2.take(50);
  assert.equal(server.used, 110);
  // Fair share 33: the hogs wait, the small one goes on.
  assert.equal(hog.admits(), false);
  small.take(10);
  assert.equal(small.admits(), true);
  small.take(30);
  assert.equal(small.admits(), false, 'above its share and the server is over');
  let hogResumed = false;
  hog.waitUntilAdmitted(() => (hogResumed = true));
  // hog2 goes away: its bytes and its share are released.
  hog2.close();
  assert.equal(server.used, 100);
  assert.equal(hogResumed, false, 'share 50, hog holds 60, server at its limit');
  small.give(40);
  assert.equal(server.used, 60);
  assert.equal(hogResumed, false, 'server above half, hog above half its share');
  hog.give(30);
  assert.equal(hogResumed, true);
});

test('a closed connection no longer counts, even for what it gives back later', () => {
  const server = new MemoryBudget(100);
  const c = server.connection(50);
  c.take(40);
  assert.equal(server.used, 40);
  c.close();
  assert.equal(server.used, 0);
  c.give(40);
  assert.equal(server.used, 0);
  c.take(10);
  assert.equal(server.used, 0);
});

test('property: taking only when admitted, a server holds at most its limit plus one request per connection', () => {
  const maxRequest = 64;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 64, max: 2000 }),
      fc.integer({ min: 64, max: 2000 }),
      fc.array(fc.record({ conn: fc.nat(), size: fc.integer({ min: 1, max: maxRequest }), finish: fc.nat() }), { maxLength: 300 }),
      (n, serverLimit, connLimit, steps) => {
        const server = new MemoryBudget(serverLimit);
        const conns = Array.from({ length: n }, () => {
          const c = server.connection(connLimit);
          c.startSharing(connLimit);
          return { budget: c, held: [] as number[], waiting: false };
        });
        for (const s of steps) {
          const c = conns[s.conn % n]!;
          // Something in flight finishes now and then (any connection).
          const f = conns[s.finish % n]!;
          if (s.finish % 3 === 0 && f.held.length > 0) f.budget.give(f.held.shift()!);
          if (c.waiting) continue;
          if (!c.budget.admits()) {
            c.waiting = true;
            c.budget.waitUntilAdmitted(() => (c.waiting = false));
            continue;
          }
          c.budget.take(s.size);
          c.held.push(s.size);
          assert.ok(c.budget.used <= connLimit + maxRequest);
          assert.ok(server.used <= serverLimit + n * maxRequest, `server holds ${server.used}`);
        }
        // Everything given back: nobody is left waiting, nothing is held.
        for (const c of conns) while (c.held.length) c.budget.give(c.held.shift()!);
        assert.equal(server.used, 0);
        assert.ok(conns.every((c) => !c.waiting));
      },
    ),
    { numRuns: 500 },
  );
});
