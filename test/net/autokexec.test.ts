// The laptop's trigger between network namespaces: the real autokexec code
// listening on the laptop's interfaces, hand-made datagrams and the real
// `stiefelctl client` from the desktop's. What would reboot this machine
// (kexec, systemctl kexec) and what needs logged-in users (wall,
// notify-send) are recording stand-ins here; the end-to-end journey in VMs
// runs them for real.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/cli';
import { requestCancel } from '../../src/laptop/autokexec';
import { buildWorld, writeConfig, writeSecret, type World } from './fixtures/world';

let w: World;
let config: string;
const state = () => join(w.dir, 'autokexec.json');
const socket = () => join(w.dir, 'autokexec.sock');

before(async () => {
  w = await buildWorld();
  writeSecret(join(w.dir, 'secret'));
  // stiefelOS as setup-server-os would have built it (only its presence matters here).
  const image = join(w.dir, 'stiefelos');
  mkdirSync(image);
  writeFileSync(join(image, 'vmlinuz'), 'kernel');
  writeFileSync(join(image, 'initrd.img'), 'initrd');
  config = writeConfig(join(w.dir, 'laptop.yaml'), {
    secret: 'secret',
    extra: `autokexec:\n  delay_s: 1\n  holdoff_s: 600\n  image: ${image}\n  cmdline_append: "loglevel=4"\n`,
  });
  writeConfig(join(w.dir, 'desktop.yaml'), { secret: 'secret', timeoutS: 4 });
});

after(async () => {
  await w?.cleanup();
});

function laptop() {
  return w.lab.spawn(w.server, process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/autokexec-laptop.ts'), config, state(), socket()], { label: 'autokexec', env: { ...process.env } });
}

async function send(mode: 'new' | 'again' | 'forged', file?: string): Promise<void> {
  await w.lab.configure({ ns: w.client, name: 'stf3c1', up: true });
  await w.lab.linkLocal(w.client, 'stf3c1');
  const r = await w.lab.exec(w.client, process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test/net/fixtures/discovery-send.ts'), join(w.dir, 'secret'), 'stf3c1', mode, ...(file ? [file] : [])], { timeoutMs: 20_000 });
  assert.equal(r.code, 0, r.stderr);
}

const kexecLines = (out: string): string[] => out.split('\n').filter((l) => l.startsWith('KEXEC'));

test('an authentic request triggers a countdown that --cancel stops; after a restart, neither a forged nor that replayed request triggers; the real client does', async () => {
  // 1. A valid request: stiefelOS is loaded, the users told, and the countdown cancelled.
  const a = laptop();
  await a.waitFor(/READY/);
  await a.waitFor(/waiting for desktops on UDP port 61570/);
  const captured = join(w.dir, 'request.bin');
  await send('new', captured);
  await a.waitFor(/NOTIFY this laptop reboots into stiefelOS in 1 s/);
  assert.match(await requestCancel(socket()), /^cancelled: this laptop stays in its own OS; requests are ignored for 600 s$/);
  await a.waitFor(/KEXEC unload/);
  assert.match(a.stdout, new RegExp(`KEXEC load ${w.dir}/stiefelos/vmlinuz ${w.dir}/stiefelos/initrd.img stiefel.role=server console=ttyS0,115200 console=tty0 loglevel=4\\n`));
  assert.match(a.stderr, /triggered: the desktop probe at fe80::[0-9a-f:]+%stf3s1 asked for this laptop/);
  assert.match(await requestCancel(socket()), /^nothing to cancel/);
  await a.stop();
  assert.ok(existsSync(state()), 'the newest request time is kept on disk');

  // 2. After a restart: a forged request and the captured one replayed change nothing.
  const b = laptop();
  await b.waitFor(/READY/);
  await send('forged');
  await b.waitFor(/refused a request from fe80::[0-9a-f:]+%stf3s1: bad-tag \(a forged request/);
  await send('again', captured);
  await b.waitFor(/refused a request from fe80::[0-9a-f:]+%stf3s1: stale/);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(kexecLines(b.stdout), [], 'nothing loaded, nothing rebooted');

  // 3. The desktop's real client, looking for its laptop, triggers the reboot.
  await w.lab.ip(w.client, ['link', 'set', 'dev', 'stf3c1', 'down']);
  const desktop = w.lab.spawn(w.client, process.execPath, [w.cli, 'client', '--config', join(w.dir, 'desktop.yaml'), '--no-kexec', '--out', join(w.dir, 'out')], { label: 'stiefelctl client' });
  await b.waitFor(/KEXEC exec \(systemctl kexec\)/, 15_000);
  assert.deepEqual(kexecLines(b.stdout).map((l) => l.split(' ').slice(0, 2).join(' ')), ['KEXEC load', 'KEXEC exec']);
  assert.match(b.stdout, /NOTIFY rebooting into stiefelOS now/);
  assert.match(b.stderr, /rebooting into stiefelOS \(systemctl kexec: a clean shutdown first\)/);
  // Its further requests (it keeps looking until stiefelOS answers) start nothing more.
  await desktop.wait(15_000);
  assert.equal(kexecLines(b.stdout).length, 2);
  await b.stop();
  const saved = JSON.parse(readFileSync(state(), 'utf8')) as { newestRequestMs: number };
  assert.ok(saved.newestRequestMs > Date.now() - 60_000);
});
