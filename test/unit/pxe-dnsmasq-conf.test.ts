// dnsmasq's configuration per link, against expected-output files: a link
// with no other DHCP server (BIOS, UEFI and iPXE clients told apart by tags)
// and a LAN where another server answers (ProxyDHCP). Bad input is refused
// before it reaches the file. Regenerate with STIEFEL_UPDATE_FIXTURES=1.
import { strict as assert } from 'node:assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { StiefelError } from '../../src/errors';
import { dnsmasqConf, linkAddressing, networkAddress, type DnsmasqLinkOptions } from '../../src/pxe/dnsmasq-conf';
import { parseProbeOutput } from '../../src/pxe/boot-services';

const FIX = join(__dirname, 'fixtures', 'pxe');

const base = { interface: 'enp3s0', httpPort: 4680, tftpRoot: '/run/stiefelsystem/pxe/tftp', leaseFile: '/run/stiefelsystem/pxe/enp3s0.leases', user: 'nobody' };
const dhcp: DnsmasqLinkOptions = { ...base, mode: 'dhcp', ...linkAddressing('10.185.0.0/16', 3) };
const proxy: DnsmasqLinkOptions = { ...base, mode: 'proxy', address: '192.168.1.23', prefixLength: 24 };

function expectFile(name: string, text: string): void {
  const path = join(FIX, name);
  if (process.env.STIEFEL_UPDATE_FIXTURES === '1') writeFileSync(path, text);
  assert.equal(text, readFileSync(path, 'utf8'));
}

test('dhcp mode: leases A.B.N.2-9 to PXE clients only, no router or DNS', () => {
  const conf = dnsmasqConf(dhcp);
  expectFile('dhcp.conf', conf);
  assert.match(conf, /^dhcp-range=10\.185\.3\.2,10\.185\.3\.9,255\.255\.255\.0,1h$/m);
  assert.match(conf, /^dhcp-vendorclass=set:pxe,PXEClient$/m);
  assert.match(conf, /^dhcp-ignore=tag:!pxe$/m);
  assert.match(conf, /^dhcp-option=option:router$/m);
  assert.match(conf, /^port=0$/m);
  assert.doesNotMatch(conf, /proxy|pxe-service|tftp-no-fail/);
});

test('dhcp mode: BIOS gets undionly.kpxe, UEFI x86_64 (arch 7 or 9) ipxe.efi, iPXE the HTTP script', () => {
  const conf = dnsmasqConf(dhcp);
  assert.match(conf, /^dhcp-match=set:bios,option:client-arch,0$/m);
  assert.match(conf, /^dhcp-match=set:efi64,option:client-arch,7$/m);
  assert.match(conf, /^dhcp-match=set:efi64,option:client-arch,9$/m);
  assert.match(conf, /^dhcp-match=set:ipxe,175$/m);
  assert.match(conf, /^dhcp-userclass=set:ipxe,iPXE$/m);
  const boots = conf.split('\n').filter((l) => l.startsWith('dhcp-boot='));
  assert.deepEqual(boots, [
    'dhcp-boot=tag:ipxe,http://10.185.3.1:4680/pxe/boot.ipxe',
    'dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe',
    'dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi',
  ]);
});

test('proxy mode: no addresses, the boot file through PXE menu entries, iPXE the HTTP script', () => {
  const conf = dnsmasqConf(proxy);
  expectFile('proxy.conf', conf);
  assert.match(conf, /^dhcp-range=192\.168\.1\.0,proxy,255\.255\.255\.0$/m);
  assert.match(conf, /^dhcp-boot=tag:ipxe,http:\/\/192\.168\.1\.23:4680\/pxe\/boot\.ipxe$/m);
  assert.match(conf, /^pxe-service=tag:!ipxe,x86PC,"stiefelsystem",undionly\.kpxe$/m);
  assert.match(conf, /^pxe-service=tag:!ipxe,x86-64_EFI,"stiefelsystem",ipxe\.efi$/m);
  assert.match(conf, /^pxe-service=tag:!ipxe,BC_EFI,"stiefelsystem",ipxe\.efi$/m);
  assert.doesNotMatch(conf, /dhcp-authoritative|no-ping|option:router/);
});

test('TFTP: only the run directory, tftp-secure, never a silent start without it', () => {
  for (const conf of [dnsmasqConf(dhcp), dnsmasqConf(proxy)]) {
    assert.match(conf, /^enable-tftp$/m);
    assert.match(conf, /^tftp-root=\/run\/stiefelsystem\/pxe\/tftp$/m);
    assert.match(conf, /^tftp-secure$/m);
    assert.doesNotMatch(conf, /tftp-no-fail/);
    assert.match(conf, /^interface=enp3s0$\n^except-interface=lo$\n^bind-interfaces$/m);
  }
});

test('link addressing: link N of A.B.0.0/16', () => {
  assert.deepEqual(linkAddressing('10.185.0.0/16', 1), { address: '10.185.1.1', prefixLength: 24, range: { first: '10.185.1.2', last: '10.185.1.9' } });
  assert.equal(networkAddress('192.168.77.112', 24), '192.168.77.0');
  assert.equal(networkAddress('172.16.200.9', 12), '172.16.0.0');
  for (const [subnet, n] of [['10.185.0.0/24', 1], ['10.185.0.0/16', 0], ['10.185.0.0/16', 255], ['300.1.0.0/16', 1]] as const) {
    assert.throws(() => linkAddressing(subnet, n), (err: unknown) => err instanceof StiefelError && err.code === 'E_PXE_CONFIG');
  }
});

test('bad input is refused with one StiefelError, nothing odd reaches the file', () => {
  const bad: Array<Partial<DnsmasqLinkOptions>> = [
    { interface: 'eth0\nconf-file=/etc/shadow' },
    { interface: 'eth0,lo' },
    { interface: '..' },
    { interface: 'averyveryverylongname' },
    { interface: '' },
    { address: '10.185.3.256' },
    { address: '10.185.3.1\nenable-ra' },
    { address: 'fe80::1' },
    { prefixLength: 33 },
    { httpPort: 0 },
    { httpPort: 65536 },
    { tftpRoot: 'relative/tftp' },
    { tftpRoot: '/run/tftp,eth1' },
    { tftpRoot: '/run/../etc' },
    { leaseFile: '/run/leases file' },
    { user: 'root\nuser=x' },
    { range: { first: '10.185.4.2', last: '10.185.4.9' } },
    { range: { first: '10.185.3.9', last: '10.185.3.2' } },
    { range: { first: '10.185.3.1', last: '10.185.3.9' } },
    { range: undefined },
    { mode: 'relay' as never },
  ];
  for (const change of bad) {
    assert.throws(
      () => dnsmasqConf({ ...dhcp, ...change }),
      (err: unknown) => err instanceof StiefelError && err.code === 'E_PXE_CONFIG' && !err.message.includes('\n'),
      JSON.stringify(change),
    );
  }
});

test('the probe: a lease from udhcpc, an offer without a lease, silence', () => {
  assert.deepEqual(
    parseProbeOutput('stiefel-probe deconfig ip= mask= serverid= lease=\nstiefel-probe bound ip=192.168.77.112 mask=24 serverid=192.168.77.1 lease=3600\n', ''),
    { answered: true, lease: { address: '192.168.77.112', prefixLength: 24, server: '192.168.77.1', seconds: 3600 } },
  );
  assert.deepEqual(parseProbeOutput('stiefel-probe leasefail ip= mask= serverid= lease=\n', 'udhcpc: broadcasting select for 192.168.77.112, server 192.168.77.1\nudhcpc: no lease, failing\n'), { answered: true });
  assert.deepEqual(parseProbeOutput('stiefel-probe leasefail ip= mask= serverid= lease=\n', 'udhcpc: broadcasting discover\nudhcpc: no lease, failing\n'), { answered: false });
});
