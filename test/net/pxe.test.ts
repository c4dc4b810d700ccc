// The PXE boot services (startPxeServices, real dnsmasq) between network
// namespaces:
//
//   cliA ns                laptop ns                 lan ns                 cliB ns
//   spxa1 --------------- spxl1  (nobody else: DHCP for PXE clients)
//                          spxl2 ------ spxb0 [spxbr 192.168.77.1, dnsmasq] spxb1 ------ spxc2
//                                      (another DHCP server: we are ProxyDHCP only)
//
// Real clients: busybox udhcpc, ISC dhclient, tftp-hpa; hand-made DHCP and
// TFTP packets from fixtures/pxe-client.ts. Only addresses inside these
// namespaces are used.
import { strict as assert } from 'node:assert';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../helpers/cli';
import { NetnsLab, type LabProcess, type Namespace } from '../helpers/netns';
import { requireTool } from '../helpers/tools';

const IPXE_DIR = '/usr/lib/ipxe';
const LAPTOP = join(REPO_ROOT, 'test/net/fixtures/pxe-laptop.ts');
const CLIENT = join(REPO_ROOT, 'test/net/fixtures/pxe-client.ts');
const REPORT = '#!/bin/sh\necho "udhcpc-$1 ip=$ip mask=$mask serverid=$serverid boot_file=$boot_file siaddr=$siaddr router=$router"\n';

interface Lease {
  ip: string;
  serverid: string;
  bootFile: string;
}

test('PXE boot services: DHCP for PXE clients only, ProxyDHCP beside another server, TFTP', { timeout: 90_000 }, async (t) => {
  for (const tool of ['dnsmasq', 'busybox', 'dhclient', 'tftp']) requireTool(tool);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) if (!existsSync(join(IPXE_DIR, f))) throw new Error(`${IPXE_DIR}/${f} is missing: run 'sudo scripts/setup.sh' (package ipxe)`);
  const lab = await NetnsLab.create('stfpx');
  const dir = mkdtempSync(join(tmpdir(), 'stfpx-'));
  chmodSync(dir, 0o755); // dnsmasq, as nobody, reads the TFTP root below it
  t.after(async () => {
    await lab.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const laptop = await lab.namespace('lap');
  const lan = await lab.namespace('lan');
  const cliA = await lab.namespace('clia');
  const cliB = await lab.namespace('clib');
  await lab.veth({ ns: cliA, name: 'spxa1', up: true }, { ns: laptop, name: 'spxl1', up: true });
  await lab.ip(lan, ['link', 'add', 'spxbr', 'type', 'bridge']);
  await lab.ip(lan, ['addr', 'add', '192.168.77.1/24', 'dev', 'spxbr']);
  await lab.ip(lan, ['link', 'set', 'spxbr', 'up']);
  await lab.veth({ ns: laptop, name: 'spxl2', up: true }, { ns: lan, name: 'spxb0' });
  await lab.veth({ ns: cliB, name: 'spxc2', up: true }, { ns: lan, name: 'spxb1' });
  for (const port of ['spxb0', 'spxb1']) await lab.ip(lan, ['link', 'set', port, 'master', 'spxbr', 'up']);

  const report = join(dir, 'report.sh');
  writeFileSync(report, REPORT, { mode: 0o755 });
  // The LAN's own DHCP server: a plain dnsmasq, as a home router runs it (it pings before offering).
  writeFileSync(join(dir, 'lan.conf'), `port=0\ninterface=spxbr\nbind-interfaces\nno-resolv\nno-hosts\npid-file=\nlog-facility=-\ndhcp-leasefile=${dir}/lan.leases\ndhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h\n`);
  const lanServer = lab.spawn(lan, 'dnsmasq', [`--conf-file=${dir}/lan.conf`, '--keep-in-foreground'], { label: 'LAN dnsmasq' });
  await lanServer.waitFor(/sockets bound exclusively to interface spxbr/);

  const udhcpc = async (ns: Namespace, ifname: string, extra: string[], tries = 2): Promise<Lease | undefined> => {
    const r = await lab.exec(ns, 'busybox', ['udhcpc', '-i', ifname, '-f', '-q', '-n', '-t', String(tries), '-T', '1', '-A', '0', '-s', report, ...extra], { timeoutMs: 15_000 });
    const m = /^udhcpc-bound ip=(\S+) mask=\S* serverid=(\S*) boot_file=(\S*)/m.exec(r.stdout);
    return m ? { ip: m[1]!, serverid: m[2]!, bootFile: m[3]! } : undefined;
  };
  const pxeClient = async (ns: Namespace, args: string[]): Promise<unknown> => {
    const r = await lab.exec(ns, process.execPath, ['--import', 'tsx', CLIENT, ...args], { timeoutMs: 20_000 });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout.trim().split('\n').pop()!);
  };

  // The laptop: both links come up at once; each is probed in parallel.
  const started = Date.now();
  const services: LabProcess = lab.spawn(laptop, process.execPath, ['--import', 'tsx', LAPTOP, join(dir, 'run'), IPXE_DIR, 'spxl1', 'spxl2'], { label: 'pxe-laptop' });
  t.after(() => services.stop());
  await services.waitFor(/PXE-LINK [^\n]*\n[^\n]*PXE-LINK [^\n]*\n/, 20_000);
  const links = services.stdout.split('\n').filter((l) => l.startsWith('PXE-LINK ')).map((l) => JSON.parse(l.slice(9)));
  t.diagnostic(`both links served after ${Date.now() - started} ms (probe, address, dnsmasq)`);
  const [p2p, proxied] = links as Array<{ interface: string; mode: string; address: string; bootUrl: string }>;
  assert.deepEqual(p2p, { interface: 'spxl1', mode: 'dhcp', address: '10.185.1.1', prefixLength: 24, bootUrl: "http://10.185.1.1:4680/pxe/boot.ipxe" }, `${services.stderr}\nLAN server:\n${lanServer.output}`);
  assert.equal(proxied?.mode, 'proxy', `${services.stderr}\nLAN server:\n${lanServer.output}`);
  assert.equal(proxied!.interface, 'spxl2');
  assert.equal(proxied!.mode, 'proxy');
  assert.match(proxied!.address, /^192\.168\.77\.(1[0-4][0-9]|150)$/, 'the laptop took the address the LAN server leased to the probe');
  assert.match(await lab.ip(laptop, ['-4', 'addr', 'show', 'dev', 'spxl1']), /inet 10\.185\.1\.1\/24/);
  assert.match(await lab.ip(laptop, ['-4', 'addr', 'show', 'dev', 'spxl2']), new RegExp(`inet ${proxied!.address.replace(/\./g, '\\.')}/24`));

  await t.test('udhcpc and dhclient get a lease only when they say PXEClient', async () => {
    assert.equal(await udhcpc(cliA, 'spxa1', ['-V', 'not-a-pxe-rom']), undefined, 'a client without vendor class PXEClient gets no answer');
    const bios = await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '93:0000']);
    assert.ok(bios, 'a PXE client gets a lease');
    assert.match(bios.ip, /^10\.185\.1\.[2-9]$/);
    assert.equal(bios.serverid, '10.185.1.1');
    assert.equal(bios.bootFile, 'undionly.kpxe');
    assert.equal((await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient:Arch:00007:UNDI:003016', '-x', '93:0007']))?.bootFile, 'ipxe.efi');
    assert.equal((await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient:Arch:00009:UNDI:003016', '-x', '93:0009']))?.bootFile, 'ipxe.efi');
    assert.equal((await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient:Arch:00007:UNDI:003016', '-x', '93:0007', '-x', '0xaf:130101']))?.bootFile, 'http://10.185.1.1:4680/pxe/boot.ipxe');

    const dhclient = async (vendorClass: string | undefined): Promise<string | undefined> => {
      const conf = join(dir, `dhclient-${vendorClass ? 'pxe' : 'plain'}.conf`);
      writeFileSync(conf, `timeout 3;\nretry 1;\n${vendorClass ? `send vendor-class-identifier "${vendorClass}";\n` : ''}`);
      const out = await lab.exec(cliA, 'dhclient', ['-4', '-1', '-v', '-sf', '/bin/true', '-cf', conf, '-lf', `${conf}.leases`, '-pf', `${conf}.pid`, 'spxa1'], { timeoutMs: 20_000 });
      const pid = Number(readFileSync(`${conf}.pid`, { encoding: 'utf8', flag: 'a+' }).trim());
      if (pid) process.kill(pid, 'SIGKILL'); // dhclient went to the background to renew
      return /bound to (\S+)/.exec(out.stdout + out.stderr)?.[1];
    };
    assert.equal(await dhclient(undefined), undefined);
    assert.match((await dhclient('PXEClient:Arch:00000'))!, /^10\.185\.1\.[2-9]$/);
  });

  await t.test('beside another DHCP server we answer as ProxyDHCP only: the boot file, never an address', async () => {
    const lease = await udhcpc(cliB, 'spxc2', ['-V', 'not-a-pxe-rom'], 6);
    assert.ok(lease, 'the LAN server leases to everyone');
    assert.equal(lease.serverid, '192.168.77.1');
    // A PXE ROM's DISCOVER gets two offers: an address from the LAN server, the boot menu from us.
    await lab.ip(cliB, ['route', 'add', 'default', 'dev', 'spxc2']);
    const replies = (await pxeClient(cliB, ['discover', '0'])) as Array<{ from: string; yiaddr: string; file: string; options: Record<string, string> }>;
    const ours = replies.filter((r) => r.from === proxied!.address);
    const theirs = replies.filter((r) => r.from === '192.168.77.1');
    assert.ok(ours.length >= 1, JSON.stringify(replies));
    for (const reply of ours) {
      assert.equal(reply.yiaddr, '0.0.0.0', 'ProxyDHCP hands out no address');
      assert.equal(reply.options['51'], undefined, 'no lease time: no lease');
      assert.equal(Buffer.from(reply.options['60']!, 'hex').toString(), 'PXEClient');
      assert.ok(reply.options['43'], 'the PXE menu (option 43) tells the ROM where to boot from');
    }
    assert.ok(theirs.length >= 1 && theirs[0]!.yiaddr.startsWith('192.168.77.'), JSON.stringify(replies));
    const ipxe = (await pxeClient(cliB, ['discover', '7', 'ipxe'])) as typeof replies;
    const oursIpxe = ipxe.filter((r) => r.from === proxied!.address);
    assert.ok(oursIpxe.length >= 1, JSON.stringify(ipxe));
    for (const reply of oursIpxe) {
      assert.equal(reply.file, proxied!.bootUrl);
      assert.equal(reply.yiaddr, '0.0.0.0');
    }
    assert.equal(readFileSync(join(dir, 'run', 'spxl2.leases'), 'utf8'), '', 'our lease file on the LAN link stays empty');
    assert.match(services.stderr, /PXE\(spxl2\) 52:54:00:12:34:56 proxy/);
  });

  // The PXE client of cliA keeps the address it was leased, for TFTP.
  const clientAddress = (await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient', '-x', '93:0000']))!.ip;
  await lab.ip(cliA, ['addr', 'add', `${clientAddress}/24`, 'dev', 'spxa1']);
  const tftpGet = (remote: string, local: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    lab.exec(cliA, 'tftp', ['-v', '-m', 'binary', '10.185.1.1', '-c', 'get', remote, local], { timeoutMs: 15_000 });

  await t.test('tftp fetches undionly.kpxe and ipxe.efi byte-identical', async () => {
    for (const file of ['undionly.kpxe', 'ipxe.efi']) {
      const local = join(dir, `got-${file}`);
      const r = await tftpGet(file, local);
      assert.ok(readFileSync(local).equals(readFileSync(join(IPXE_DIR, file))), `${file}: ${r.stdout}${r.stderr}`);
    }
  });

  await t.test('paths with .. and absolute paths outside the root are refused', async () => {
    for (const remote of ['../probe.sh', '../spxl1.conf', '../../../../etc/passwd', '/etc/passwd', `${dir}/lan.conf`, 'tftp/../../spxl1.conf', '..\\spxl1.conf']) {
      const local = join(dir, 'refused');
      rmSync(local, { force: true });
      const r = await tftpGet(remote, local);
      const said = r.stdout + r.stderr;
      assert.match(said, /Error code \d+/, `${remote}: ${said}`);
      assert.ok(!existsSync(local) || readFileSync(local).length === 0, `${remote} was served`);
    }
    // Inside the root an absolute path is fine (dnsmasq's manual says so).
    const local = join(dir, 'absolute');
    await tftpGet(join(dir, 'run', 'tftp', 'undionly.kpxe'), local);
    assert.ok(readFileSync(local).equals(readFileSync(join(IPXE_DIR, 'undionly.kpxe'))));
  });

  await t.test('a huge blksize option is cut to what the link carries', async (t) => {
    const r = (await pxeClient(cliA, ['rrq', '10.185.1.1', 'ipxe.efi', '65464'])) as { opcode: number; options: Record<string, string>; firstBlock?: { bytes: number } };
    assert.equal(r.opcode, 6, `an OACK: ${JSON.stringify(r)}`);
    const granted = Number(r.options.blksize);
    t.diagnostic(`blksize 65464 asked, ${granted} granted`);
    assert.ok(granted >= 512 && granted <= 1468, `granted blksize ${granted} fits a 1500-byte MTU`);
    assert.equal(r.firstBlock?.bytes, granted);
  });

  await t.test('garbage to ports 67 and 69 leaves dnsmasq serving', async () => {
    const before = services.stderr;
    await pxeClient(cliA, ['garbage', '10.185.1.1']);
    await pxeClient(cliB, ['garbage', proxied!.address]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await udhcpc(cliA, 'spxa1', ['-V', 'PXEClient', '-x', '93:0000']))?.bootFile, 'undionly.kpxe');
    const local = join(dir, 'after-garbage');
    await tftpGet('undionly.kpxe', local);
    assert.ok(readFileSync(local).equals(readFileSync(join(IPXE_DIR, 'undionly.kpxe'))));
    const replies = (await pxeClient(cliB, ['discover', '0'])) as Array<{ from: string }>;
    assert.ok(replies.some((r) => r.from === proxied!.address));
    assert.doesNotMatch(services.stderr.slice(before.length), /exited/, 'no dnsmasq died');
  });

  await t.test('close stops dnsmasq and removes the addresses it added', async () => {
    services.kill('SIGTERM');
    await services.waitFor(/PXE-CLOSED/, 10_000);
    await services.wait(5000);
    assert.doesNotMatch(await lab.ip(laptop, ['-4', 'addr', 'show', 'dev', 'spxl1']), /inet /);
    assert.doesNotMatch(await lab.ip(laptop, ['-4', 'addr', 'show', 'dev', 'spxl2']), /inet /);
    const left = await lab.exec(laptop, 'sh', ['-c', 'ip netns identify $$ >/dev/null; ss -ulpn | grep -c dnsmasq || true']);
    assert.equal(left.stdout.trim(), '0', 'no dnsmasq left in the laptop namespace');
  });
});
