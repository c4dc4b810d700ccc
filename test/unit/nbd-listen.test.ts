import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ListenAddressError, formatListenAddress, nbdUri, parseListenAddress } from '../../src/nbd/listen';

test('--listen forms: IPv4, host names, IPv6 with and without brackets and zones, unix sockets', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:10900'), { kind: 'tcp', host: '127.0.0.1', port: 10900 });
  assert.deepEqual(parseListenAddress('0.0.0.0'), { kind: 'tcp', host: '0.0.0.0', port: 10809 });
  assert.deepEqual(parseListenAddress('localhost:0'), { kind: 'tcp', host: 'localhost', port: 0 });
  assert.deepEqual(parseListenAddress('[::1]:10809'), { kind: 'tcp', host: '::1', port: 10809 });
  assert.deepEqual(parseListenAddress('[::]'), { kind: 'tcp', host: '::', port: 10809 });
  assert.deepEqual(parseListenAddress('::'), { kind: 'tcp', host: '::', port: 10809 });
  assert.deepEqual(parseListenAddress('[fe80::1%wg0]:5000'), { kind: 'tcp', host: 'fe80::1%wg0', port: 5000 });
  assert.deepEqual(parseListenAddress('fe80::1%stiefellink'), { kind: 'tcp', host: 'fe80::1%stiefellink', port: 10809 });
  assert.deepEqual(parseListenAddress('unix:/run/nbd.sock'), { kind: 'unix', path: '/run/nbd.sock' });
});

test('bad --listen values are refused with a reason', () => {
  for (const [text, why] of [
    ['127.0.0.1:99999', /not a TCP port/],
    ['127.0.0.1:http', /not a TCP port/],
    [':10809', /names no host/],
    ['[::1', /closing/],
    ['[1.2.3.4]:80', /not an IPv6/],
    ['[::1]x', /expected ':PORT'/],
    ['1::2::3', /not an IPv6/],
    ['unix:', /no socket path/],
    ['bad_host!:1', /not an IP address or host name/],
    ['[::1%eth0]:1', /link-local/],
    ['fe80::1%', /empty zone/],
  ] as const) {
    assert.throws(() => parseListenAddress(text), (err: unknown) => err instanceof ListenAddressError && why.test(err.message), text);
  }
});

test('addresses print back, and NBD URIs use RFC 6874 zones and reachable hosts', () => {
  assert.equal(formatListenAddress({ kind: 'tcp', host: '::1', port: 1 }), '[::1]:1');
  assert.equal(formatListenAddress({ kind: 'tcp', host: '10.0.0.1', port: 2 }), '10.0.0.1:2');
  assert.equal(formatListenAddress({ kind: 'unix', path: '/x' }), 'unix:/x');
  assert.equal(nbdUri({ kind: 'tcp', host: 'fe80::1%wg0', port: 10809 }, 'disk'), 'nbd://[fe80::1%25wg0]:10809/disk');
  assert.equal(nbdUri({ kind: 'tcp', host: '0.0.0.0', port: 7 }), 'nbd://127.0.0.1:7/');
  assert.equal(nbdUri({ kind: 'unix', path: '/tmp/a b.sock' }, 'x'), 'nbd+unix:///x?socket=%2Ftmp%2Fa%20b.sock');
});
