// The tunnel's retransmissions held while the cable is out, on the real
// kernel's TCP (src/netif/retransmit-hold.ts). The host kernel has no
// WireGuard, so a veth stands in for the tunnel and the pulled cable is
// made of two parts, as the desktop sees them in the end-to-end cable
// scenario: the link the hold watches loses its carrier (its peer goes
// down), and nothing passes the "cable" namespace between the two TCP ends
// (a queue that drops all on each of its sides; the sender sees no error).
//
//   desk ns                    cable ns                   lap ns
//     stf9t0 (tunnel) ------- stf9r0 | stf9r1 ------------ stf9t1
//     stf9l0 (link)   ------- stf9c0 (set down: no carrier on stf9l0)
//
// Two such worlds at once, one with the hold and one without (the control:
// TCP's back-off must grow there, or the outage was not one). With the hold
// the back-off must not grow while the cable is out, every line must arrive
// in order afterwards, and the tunnel's queue must be back to the default.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cliPath, REPO_ROOT } from '../helpers/cli';
import { NetnsLab, type LabProcess, type Namespace } from '../helpers/netns';
import { requireTool } from '../helpers/tools';

const FIXTURE = join(REPO_ROOT, 'test/net/fixtures/hold-peer.ts');
const OUT_S = 12;

interface World {
  lab: NetnsLab;
  desk: Namespace;
  cable: Namespace;
  sender: LabProcess;
  receiver: LabProcess;
}

async function world(prefix: string, hold: boolean): Promise<World> {
  const lab = await NetnsLab.create(prefix);
  const desk = await lab.namespace('desk');
  const cable = await lab.namespace('cable');
  const lap = await lab.namespace('lap');
  await lab.veth({ ns: desk, name: 'stf9t0', up: true, addresses: ['10.77.1.1/24'] }, { ns: cable, name: 'stf9r0', up: true, addresses: ['10.77.1.254/24'] });
  await lab.veth({ ns: lap, name: 'stf9t1', up: true, addresses: ['10.77.2.1/24'] }, { ns: cable, name: 'stf9r1', up: true, addresses: ['10.77.2.254/24'] });
  await lab.veth({ ns: desk, name: 'stf9l0', up: true }, { ns: cable, name: 'stf9c0', up: true });
  await lab.ip(desk, ['route', 'add', 'default', 'via', '10.77.1.254']);
  await lab.ip(lap, ['route', 'add', 'default', 'via', '10.77.2.254']);
  await lab.exec(cable, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  const receiver = lab.spawn(lap, process.execPath, ['--import', 'tsx', FIXTURE, 'recv', '10.77.2.1', '7000'], { label: 'receiver' });
  await receiver.waitFor(/listening/);
  const sender = lab.spawn(desk, process.execPath, ['--import', 'tsx', FIXTURE, 'send', '10.77.2.1', '7000', 'stf9l0', 'stf9t0', hold ? 'hold' : 'nohold'], { label: 'sender' });
  await receiver.waitFor(/got 5 /);
  return { lab, desk, cable, sender, receiver };
}

/** The sender's connection's back-off count (ss -ti: `backoff:N`, absent when 0). */
async function backoff(w: World): Promise<number> {
  const r = await w.lab.exec(w.desk, 'ss', ['-tin', 'dst', '10.77.2.1']);
  return Number(/\bbackoff:(\d+)/.exec(r.stdout)?.[1] ?? 0);
}

const received = (w: World): number[] => [...w.receiver.stdout.matchAll(/^got (\d+) /gm)].map((m) => Number(m[1]));

async function pull(w: World, out: boolean): Promise<void> {
  for (const dev of ['stf9r0', 'stf9r1']) {
    await w.lab.exec(w.cable, 'tc', out ? ['qdisc', 'replace', 'dev', dev, 'root', 'pfifo', 'limit', '0'] : ['qdisc', 'del', 'dev', dev, 'root']);
  }
  await w.lab.ip(w.cable, ['link', 'set', 'dev', 'stf9c0', out ? 'down' : 'up']);
}

test(`the cable out for ${OUT_S} s: with the hold, TCP's back-off stays where it was and the data goes on once it is back; without, the back-off grows`, { timeout: 120_000 }, async (t) => {
  for (const tool of ['tc', 'ss']) requireTool(tool);
  const held = await world('stf9h', true);
  t.after(() => held.lab.cleanup());
  const control = await world('stf9n', false);
  t.after(() => control.lab.cleanup());

  await Promise.all([pull(held, true), pull(control, true)]);
  const pulledAt = Date.now();
  await held.sender.waitFor(/^hold stf9l0 /m, 5000);
  // A moment for the retransmissions already under way, then the back-off while the cable stays out.
  await new Promise((r) => setTimeout(r, 3000));
  const early = { held: await backoff(held), control: await backoff(control) };
  await new Promise((r) => setTimeout(r, OUT_S * 1000 - (Date.now() - pulledAt)));
  const late = { held: await backoff(held), control: await backoff(control) };
  const before = { held: received(held).length, control: received(control).length };
  await Promise.all([pull(held, false), pull(control, false)]);
  const backAt = Date.now();
  console.log(`# back-off 3 s after the pull and at ${OUT_S} s: with the hold ${early.held} -> ${late.held}, without ${early.control} -> ${late.control}`);
  assert.ok(late.control > early.control, `without the hold TCP backs off further (${early.control} -> ${late.control}): the outage was real`);
  assert.equal(late.held, early.held, 'with the hold the back-off does not grow while the cable is out');

  await held.sender.waitFor(/^release stf9l0 /m, 5000);
  const next = await held.receiver.waitFor(new RegExp(`^got ${before.held + 1} (\\d+)`, 'm'), 10_000);
  console.log(`# with the hold, the first line after the cable came back arrived after ${((Number(next[1]) - backAt) / 1000).toFixed(2)} s`);
  // Every line, in order, once the queue has drained.
  await held.receiver.waitFor(new RegExp(`^got ${before.held + 20} `, 'm'), 10_000);
  const lines = received(held);
  assert.deepEqual(lines, Array.from({ length: lines.length }, (_, i) => i + 1), 'every line arrived, in order');
  const qdisc = (await held.lab.exec(held.desk, 'tc', ['qdisc', 'show', 'dev', 'stf9t0'])).stdout;
  assert.doesNotMatch(qdisc, /pfifo/, `the tunnel's queue is the default again: ${qdisc}`);
  assert.ok(held.sender.running && control.sender.running, 'neither connection failed');
});

test("the desktop's laptop watch (the real CLI) holds the tunnel named in goodbye.conf while the link has no carrier, and says so on its console", { timeout: 60_000 }, async (t) => {
  requireTool('tc');
  const lab = await NetnsLab.create('stf9w');
  t.after(() => lab.cleanup());
  const dir = mkdtempSync(join(tmpdir(), 'stf9-watch-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const desk = await lab.namespace('desk');
  const other = await lab.namespace('other');
  await lab.veth({ ns: desk, name: 'stflink', up: true }, { ns: other, name: 'stflinkpeer', up: true });
  await lab.veth({ ns: desk, name: 'stftun', up: true, addresses: ['10.78.0.1/24'] }, { ns: other, name: 'stftunpeer', up: true });
  // Nobody answers status requests here: the hold does not depend on them.
  const conf = join(dir, 'goodbye.conf');
  writeFileSync(conf, `STIEFEL_GOODBYE_HOST=10.78.0.2\nSTIEFEL_GOODBYE_PORT=4645\nSTIEFEL_GOODBYE_TOKEN=${'0'.repeat(64)}\nSTIEFEL_LINK_IFNAME=stflink\nSTIEFEL_TUNNEL_IFNAME=stftun\n`);
  writeFileSync(join(dir, 'config.yaml'), 'server: {}\n');
  const consoleFile = join(dir, 'console');
  writeFileSync(consoleFile, '');
  const watch = lab.spawn(desk, process.execPath, [cliPath(), 'laptop-watch', '--every', '1', '--console', consoleFile, '--config', join(dir, 'config.yaml'), '--conf', conf], { label: 'laptop-watch' });
  const onConsole = () => readFileSync(consoleFile, 'utf8');
  const waitFor = async (re: RegExp, what: string): Promise<void> => {
    for (let i = 0; i < 100 && !re.test(onConsole()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(onConsole(), re, `${what}; the watch said: ${watch.output}`);
  };
  const qdisc = async (): Promise<string> => (await lab.exec(desk, 'tc', ['qdisc', 'show', 'dev', 'stftun'])).stdout;
  await waitFor(/watching the laptop at 10\.78\.0\.2 \(every 1 s\); stflink's carrier holds stftun's retransmissions\r\n/, 'it starts with the hold');
  assert.doesNotMatch(await qdisc(), /pfifo/, 'no hold while the carrier is there');
  await lab.ip(other, ['link', 'set', 'dev', 'stflinkpeer', 'down']);
  await waitFor(/stiefelsystem: stflink lost its carrier \(the cable to the laptop is out\): the disk's connection in stftun tries again every 0\.5 s until it is back\r\n/, 'the hold');
  assert.match(await qdisc(), /qdisc pfifo \S+: root .*limit 0p/, 'the tunnel drops what it is given');
  await lab.ip(other, ['link', 'set', 'dev', 'stflinkpeer', 'up']);
  await waitFor(/stiefelsystem: stflink has its carrier again, after \d+ s: the disk's connection goes on\r\n/, 'the release');
  assert.doesNotMatch(await qdisc(), /pfifo/, "the tunnel's queue is the default again");
  // Stopped while holding: the hold goes with it.
  await lab.ip(other, ['link', 'set', 'dev', 'stflinkpeer', 'down']);
  await waitFor(/(lost its carrier[^]*){2}/, 'the second hold');
  watch.child.kill('SIGTERM');
  await watch.exited;
  assert.doesNotMatch(await qdisc(), /pfifo/, 'no hold outlives the watch');
  // A watch killed while holding leaves the hold; the next one lets it go once the carrier is there.
  writeFileSync(consoleFile, '');
  const killed = lab.spawn(desk, process.execPath, [cliPath(), 'laptop-watch', '--every', '1', '--console', consoleFile, '--config', join(dir, 'config.yaml'), '--conf', conf], { label: 'laptop-watch' });
  await waitFor(/lost its carrier/, 'the hold of the watch to be killed');
  killed.child.kill('SIGKILL');
  await killed.exited;
  await new Promise((r) => setTimeout(r, 500));
  assert.match(await qdisc(), /qdisc pfifo \S+: root .*limit 0p/, 'left in place');
  await lab.ip(other, ['link', 'set', 'dev', 'stflinkpeer', 'up']);
  writeFileSync(consoleFile, '');
  lab.spawn(desk, process.execPath, [cliPath(), 'laptop-watch', '--every', '1', '--console', consoleFile, '--config', join(dir, 'config.yaml'), '--conf', conf], { label: 'laptop-watch' });
  await waitFor(/stflink has its carrier again/, 'the leftover released');
  assert.doesNotMatch(await qdisc(), /pfifo/, 'the leftover hold is gone');
});
