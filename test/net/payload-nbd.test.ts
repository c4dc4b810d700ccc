// `stiefelctl server` serves server.disk with the NBD server (src/nbd) to one
// desktop at a time; real NBD clients (nbdcopy, nbdinfo, qemu-io) run in the
// client namespaces. Budget: about 20 s.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabProcess, Namespace } from '../helpers/netns';
import { requireTool } from '../helpers/tools';
import { sha256OfFile, writePayloadFile } from './fixtures/payload-files';
import { buildWorld, writeConfig, writeSecret, type World } from './fixtures/world';

const DISK_SIZE = 64 * 1024 * 1024;
let w: World;
let disk: string;

before(async () => {
  requireTool('nbdcopy');
  requireTool('nbdinfo');
  requireTool('qemu-io');
  w = await buildWorld({ secondClient: true });
  disk = join(w.dir, 'laptop-disk.img');
  writePayloadFile(disk, DISK_SIZE);
  writePayloadFile(join(w.dir, 'k'), 2 * 1024 * 1024 + 1);
  writePayloadFile(join(w.dir, 'i'), 3 * 1024 * 1024 + 2);
  writeSecret(join(w.dir, 'secret'));
  writeConfig(join(w.dir, 'server.yaml'), {
    secret: 'secret',
    kernel: join(w.dir, 'k'),
    initrd: join(w.dir, 'i'),
    // The host kernel has no WireGuard: the tunnel is tested in the VMs (test/vm/e2e-*.test.ts).
    extra: `  disk: ${disk}\n  nbd:\n    export: disk\n  wireguard:\n    enabled: false\n`,
  });
  writeConfig(join(w.dir, 'client.yaml'), { secret: 'secret', timeoutS: 20 });
});

after(async () => {
  await w?.cleanup();
});

function nbdUri(serverLl: string, ifname: string): string {
  return `nbd://[${serverLl}%25${ifname}]:10809/disk`;
}

// libnbd shows the server's refusal message only in its debug output.
function nbdinfo(ns: Namespace, uri: string) {
  return w.lab.exec(ns, 'env', ['LIBNBD_DEBUG=1', 'nbdinfo', uri], { timeoutMs: 20_000 });
}

type T = { after(fn: () => unknown): void };

/** `stiefelctl server` in the laptop's namespace, serving. */
async function startLaptop(t: T): Promise<LabProcess> {
  const server = w.lab.spawn(w.server, process.execPath, [w.cli, 'server', '--config', join(w.dir, 'server.yaml')], { label: 'stiefelctl server' });
  t.after(() => server.stop());
  await server.waitFor(/serving 'stf3-laptop': .*, disk .*laptop-disk\.img on NBD 10809/);
  return server;
}

/** Desktop A fetches its payload into `out`: the laptop is then reserved for it. */
async function fetchPayload(t: T, out: string): Promise<void> {
  const a = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'client.yaml'), '--no-kexec', '--out', join(w.dir, out)], { label: 'client A' });
  t.after(() => a.stop());
  assert.equal((await a.wait(30_000)).code, 0, a.output);
}

/** qemu-io in desktop A's namespace, holding a connection to the disk open and waiting for commands. */
function qemuIo(t: T, serverLl: string): LabProcess {
  const qemu = w.lab.spawn(
    w.client,
    'qemu-io',
    ['--image-opts', `driver=nbd,server.type=inet,server.host=${serverLl}%stf3c1,server.port=10809,export=disk`],
    { label: 'qemu-io' },
  );
  t.after(() => qemu.stop());
  return qemu;
}

test('the disk is served over NBD to the desktop that fetched the payload, and to no other at the same time', async (t) => {
  const server = await startLaptop(t);
  await fetchPayload(t, 'out-a');
  const cmdline = readFileSync(join(w.dir, 'out-a', 'cmdline'), 'utf8');
  assert.match(cmdline, / stiefel\.nbd_port=10809 stiefel\.nbd_export=disk /);
  const llA = await w.lab.linkLocal(w.server, 'stf3s1');
  await w.lab.configure({ ns: w.client2!, name: 'stf3d0', up: true });
  await w.lab.linkLocal(w.client2!, 'stf3d0');
  const llB = await w.lab.linkLocal(w.server, 'stf3s2');

  // Desktop B, on another port of the laptop, is refused the disk while A boots.
  const refused = await nbdinfo(w.client2!, nbdUri(llB, 'stf3d0'));
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /nbdinfo: nbd_opt_go: server replied with error/);
  assert.match(refused.stderr, /server error message: the laptop is busy: it is waiting for the disk connection of the desktop at fe80::[0-9a-f:]+%stf3s1/);
  await server.waitFor(/refused a disk connection from fe80::[0-9a-f:]+%stf3s2: busy with fe80::[0-9a-f:]+%stf3s1/);

  // A reads the whole disk with nbdcopy: byte for byte the laptop's disk.
  const copy = join(w.dir, 'copy.img');
  const c = await w.lab.exec(w.client, 'nbdcopy', [nbdUri(llA, 'stf3c1'), copy], { timeoutMs: 60_000 });
  assert.equal(c.code, 0, c.stderr);
  assert.equal(sha256OfFile(copy), sha256OfFile(disk));

  // A holds a connection open and writes through it.
  const qemu = qemuIo(t, llA);
  qemu.child.stdin!.write('write -P 0xa5 1048576 4096\n');
  await qemu.waitFor(/wrote 4096\/4096 bytes at offset 1048576/);
  await server.waitFor(/the desktop at fe80::[0-9a-f:]+%stf3s1 connected to the disk/);
  const written = readFileSync(disk).subarray(1048576, 1048576 + 4096);
  assert.ok(written.every((b) => b === 0xa5), 'the write reached the laptop disk');

  const busy = await nbdinfo(w.client2!, nbdUri(llB, 'stf3d0'));
  assert.notEqual(busy.code, 0);
  assert.match(busy.stderr, /server error message: the laptop is busy: its disk is in use by the desktop at fe80::[0-9a-f:]+%stf3s1/);

  // Once A disconnects, the disk is free for the next desktop.
  qemu.child.stdin!.end('quit\n');
  await qemu.wait(10_000);
  await server.waitFor(/the desktop at fe80::[0-9a-f:]+%stf3s1 disconnected from the disk/);
  const free = await nbdinfo(w.client2!, nbdUri(llB, 'stf3d0'));
  assert.equal(free.code, 0, free.stderr);
  assert.match(free.stdout, new RegExp(`export-size: ${DISK_SIZE}`));
});

test("a pulled cable (45 s without carrier) does not end the desktop's disk connection: its next write goes through", { timeout: 180_000 }, async (t) => {
  const server = await startLaptop(t);
  await fetchPayload(t, 'out-cable');
  const qemu = qemuIo(t, await w.lab.linkLocal(w.server, 'stf3s1'));
  qemu.child.stdin!.write('write -P 0x5a 2097152 4096\n');
  await qemu.waitFor(/wrote 4096\/4096 bytes at offset 2097152/);
  await server.waitFor(/the desktop at fe80::[0-9a-f:]+%stf3s1 connected to the disk/);

  // Once the write's reply is acknowledged (delayed ACKs: well within 1 s),
  // the laptop's end has nothing in flight: only keepalive would notice a
  // silent peer. Then the desktop's end goes down (its addresses kept, as a
  // pulled cable keeps them): the laptop's port loses carrier and hears
  // nothing, for longer than a 30 s keepalive and its 10 probes (Node's
  // setKeepAlive(true, 30_000)) would allow.
  await new Promise((r) => setTimeout(r, 1_000));
  const c = (args: string[]) => w.lab.exec(w.client, args[0]!, args.slice(1));
  await c(['sysctl', '-q', '-w', 'net.ipv6.conf.stf3c1.keep_addr_on_down=1']);
  await c(['ip', 'link', 'set', 'stf3c1', 'down']);
  await new Promise((r) => setTimeout(r, 45_000));
  await c(['ip', 'link', 'set', 'stf3c1', 'up']);
  qemu.child.stdin!.write('write -P 0x6b 2101248 4096\n');
  await qemu.waitFor(/wrote 4096\/4096 bytes at offset 2101248/, 60_000);
  assert.doesNotMatch(server.output, /disconnected from the disk/);
  const written = readFileSync(disk).subarray(2101248, 2101248 + 4096);
  assert.ok(written.every((b) => b === 0x6b), 'the write after the cable came back reached the laptop disk');
  qemu.child.stdin!.end('quit\n');
  await qemu.wait(10_000);
});
