// `stiefelctl iso inspect` on real ISOs made at test time with
// `xorriso -as mkisofs` (Rock Ridge and Joliet, El Torito for BIOS with
// Debian's isolinux.bin and for UEFI with a FAT image made by mtools), shaped
// like an isolinux ISO, a GRUB + EFI ISO, Debian live and Ubuntu casper. The
// kernels and initrds are small made-up files: inspect reads menus and looks
// files up, it never runs them. Then a property test: inspect on randomly
// damaged copies of a real ISO either succeeds or throws a StiefelError.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { runCli } from '../helpers/cli';
import { requireTool } from '../helpers/tools';
import { StiefelError } from '../../src/errors';
import { inspectIso } from '../../src/iso/inspect';
import type { IsoSource } from '../../src/iso/reader';

const ISOLINUX_BIN = '/usr/lib/ISOLINUX/isolinux.bin';
const LDLINUX = '/usr/lib/syslinux/modules/bios/ldlinux.c32';
let dir = '';

function tree(name: string, files: Record<string, string | Buffer>): string {
  const root = join(dir, name);
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

function mkisofs(out: string, root: string, args: string[]): string {
  const iso = join(dir, out);
  execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-o', iso, '-J', '-R', ...args, root], { stdio: ['ignore', 'ignore', 'pipe'] });
  return iso;
}

const BIOS_ARGS = ['-b', 'isolinux/isolinux.bin', '-c', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table'];

/** A FAT ESP image with EFI/BOOT/BOOTX64.EFI (made up) and a grub.cfg, made with mtools. */
function espImage(path: string): void {
  execFileSync('mformat', ['-i', path, '-C', '-f', '2880', '-v', 'ESP', '::']);
  execFileSync('mmd', ['-i', path, '::/EFI', '::/EFI/BOOT']);
  const stub = join(dir, 'BOOTX64.EFI');
  writeFileSync(stub, 'MZ made-up EFI loader');
  execFileSync('mcopy', ['-i', path, stub, '::/EFI/BOOT/BOOTX64.EFI']);
}

const isos: Record<string, string> = {};

before(() => {
  for (const t of ['xorriso', 'mformat', 'mcopy']) requireTool(t);
  dir = mkdtempSync(join(tmpdir(), 'stiefel-iso-'));
  const isolinux = { 'isolinux/isolinux.bin': readFileSync(ISOLINUX_BIN), 'isolinux/ldlinux.c32': readFileSync(LDLINUX) };

  isos.isolinux = mkisofs('isolinux.iso', tree('isolinux', {
    ...isolinux,
    'isolinux/isolinux.cfg': 'UI menu.c32\nPROMPT 0\nINCLUDE menu.cfg\n',
    'isolinux/menu.cfg': ['MENU TITLE Test ISO', 'DEFAULT rescue', 'LABEL install', '  MENU LABEL ^Install', '  KERNEL /boot/vmlinuz', '  APPEND initrd=/boot/initrd.gz vga=788 --- quiet', 'LABEL rescue', '  MENU LABEL ^Rescue mode', '  LINUX ../boot/vmlinuz', '  INITRD ../boot/initrd.gz', '  APPEND rescue/enable=true --- quiet', 'LABEL hd', '  LOCALBOOT 0x80', ''].join('\n'),
    'boot/vmlinuz': 'made-up kernel',
    'boot/initrd.gz': 'made-up initrd',
  }), ['-V', 'TEST_ISOLINUX', ...BIOS_ARGS]);

  const grubTree = tree('grub', {
    'boot/grub/grub.cfg': ['set timeout=5', 'if [ "$grub_platform" = "efi" ]; then set gfx=efi; fi', 'menuentry "Linux ($gfx)" --id linux {', '  linux /kernel/bzImage console=ttyS0 quiet', '  initrd /kernel/initrd.img /kernel/microcode.img', '}', 'menuentry "Missing kernel" {', '  linux /kernel/gone root=/dev/ram0', '}', 'menuentry "Firmware" { fwsetup }', ''].join('\n'),
    'kernel/bzImage': 'made-up kernel',
    'kernel/initrd.img': 'made-up initrd',
    'kernel/microcode.img': 'made-up microcode',
  });
  espImage(join(grubTree, 'boot/grub/efi.img'));
  isos.grub = mkisofs('grub.iso', grubTree, ['-V', 'TEST_GRUB', '-e', 'boot/grub/efi.img', '-no-emul-boot']);
  // Debian's way: the ESP appended as a partition, outside the file tree.
  const esp = join(dir, 'esp.img');
  espImage(esp);
  isos.hiddenEsp = mkisofs('hidden-esp.iso', grubTree, ['-V', 'TEST_GRUB', '-append_partition', '2', '0xef', esp, '-e', '--interval:appended_partition_2:all::', '-no-emul-boot']);

  isos.live = mkisofs('live.iso', tree('live', {
    ...isolinux,
    '.disk/info': 'Debian GNU/Linux 12.5.0 "Bookworm" - Official Snapshot amd64 LIVE/INSTALL Binary 20240210-11:28\n',
    'isolinux/isolinux.cfg': 'include menu.cfg\ndefault vesamenu.c32\nprompt 0\ntimeout 0\n',
    'isolinux/menu.cfg': 'menu hshift 0\nmenu width 82\ninclude stdmenu.cfg\ninclude live.cfg\n',
    'isolinux/stdmenu.cfg': 'menu background splash.png\nmenu color title * #FFFFFFFF *\n',
    'isolinux/live.cfg': ['label live-6.1.0-18-amd64', '\tmenu label ^Live system (amd64)', '\tmenu default', '\tlinux /live/vmlinuz-6.1.0-18-amd64', '\tinitrd /live/initrd.img-6.1.0-18-amd64', '\tappend boot=live components quiet splash', '', 'label installstart', '\tmenu label Start ^installer', '\tlinux /install/vmlinuz', '\tinitrd /install/initrd.gz', '\tappend vga=788 --- quiet', ''].join('\n'),
    'boot/grub/grub.cfg': ['source /boot/grub/config.cfg', 'menuentry "Live system (amd64)" --hotkey=l {', '\tlinux\t/live/vmlinuz-6.1.0-18-amd64 boot=live components quiet splash findiso=${iso_path}', '\tinitrd\t/live/initrd.img-6.1.0-18-amd64', '}', ''].join('\n'),
    'boot/grub/config.cfg': 'set menu_color_normal=cyan/blue\nif [ x$feature_default_font_path = xy ] ; then font=unicode ; fi\n',
    'live/vmlinuz-6.1.0-18-amd64': 'made-up kernel',
    'live/initrd.img-6.1.0-18-amd64': 'made-up initrd',
    'live/filesystem.squashfs': 'made-up squashfs',
    'install/vmlinuz': 'made-up kernel',
    'install/initrd.gz': 'made-up initrd',
  }), ['-V', 'd-live 12.5.0 st amd64', ...BIOS_ARGS]);

  isos.casper = mkisofs('casper.iso', tree('casper', {
    '.disk/info': 'Ubuntu 24.04 LTS "Noble Numbat" - Release amd64 (20240424)',
    'boot/grub/grub.cfg': ['set timeout=30', 'loadfont unicode', 'menuentry "Try or Install Ubuntu" {', '\tset gfxpayload=keep', '\tlinux\t/casper/vmlinuz  --- quiet splash', '\tinitrd\t/casper/initrd', '}', 'menuentry "Ubuntu (safe graphics)" {', '\tset gfxpayload=keep', '\tlinux\t/casper/vmlinuz  nomodeset  --- quiet splash', '\tinitrd\t/casper/initrd', '}', 'grub_platform', 'if [ "$grub_platform" = "efi" ]; then', "menuentry 'UEFI Firmware Settings' {", '\tfwsetup', '}', 'else', "menuentry 'Test memory' {", '\tlinux16 /boot/memtest86+x64.bin', '}', 'fi', ''].join('\n'),
    'boot/grub/loopback.cfg': 'menuentry "Try or Install Ubuntu" {\n\tlinux\t/casper/vmlinuz  iso-scan/filename=${iso_path} --- quiet splash\n\tinitrd\t/casper/initrd\n}\n',
    'casper/vmlinuz': 'made-up kernel',
    'casper/initrd': 'made-up initrd',
  }), ['-V', 'Ubuntu 24.04 LTS amd64']);

  isos.nomenu = mkisofs('nomenu.iso', tree('nomenu', { 'README.TXT': 'just data\n' }), ['-V', 'DATA']);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function inspectJson(iso: string): Promise<any> {
  const r = await runCli(['iso', 'inspect', iso, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('an isolinux ISO: BIOS El Torito image, a menu through INCLUDE with two Linux entries, its DEFAULT, files found', async () => {
  const j = await inspectJson(isos.isolinux!);
  assert.equal(j.label, 'TEST_ISOLINUX');
  assert.equal(j.names, 'rock-ridge');
  assert.deepEqual(j.bootImages.map((b: any) => [b.platform, b.emulation, b.path]), [['bios', 'none', '/isolinux/isolinux.bin']]);
  assert.deepEqual(j.menus, [{ menu: 'isolinux', path: '/isolinux/isolinux.cfg' }]);
  assert.deepEqual(
    j.entries.map((e: any) => [e.number, e.title, e.kernel, e.kernelExists, e.initrds, e.cmdline, e.default]),
    [
      [1, 'Install', '/boot/vmlinuz', true, [{ path: '/boot/initrd.gz', exists: true }], 'vga=788 --- quiet', false],
      [2, 'Rescue mode', '/boot/vmlinuz', true, [{ path: '/boot/initrd.gz', exists: true }], 'rescue/enable=true --- quiet', true],
    ],
  );
  assert.deepEqual(j.skipped.map((s: any) => s.reason), ['boots the local disk (LOCALBOOT), not a kernel']);
  assert.equal(j.distribution.id, 'unknown');
});

test('the human form: label, distribution, El Torito images, numbered entries, all within 80 columns', async () => {
  const r = await runCli(['iso', 'inspect', isos.isolinux!]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  for (const l of lines) assert.ok(l.length <= 80, `too wide: ${l}`);
  assert.match(r.stdout, /^label +TEST_ISOLINUX$/m);
  assert.match(r.stdout, /^distribution +not recognised$/m);
  assert.match(r.stdout, /^El Torito +BIOS, no emulation: \/isolinux\/isolinux\.bin \(\S+ KiB at block \d+\)$/m);
  assert.match(r.stdout, /^ {2}1  Install +\[isolinux\]$/m);
  assert.match(r.stdout, /^ {2}2\* Rescue mode +\[isolinux\]$/m);
  assert.match(r.stdout, /^ {5}kernel {2}\/boot\/vmlinuz$/m);
  assert.match(r.stdout, /^ {5}cmdline rescue\/enable=true --- quiet$/m);
  assert.match(r.stderr, /skipped \[isolinux\] \/isolinux\/isolinux\.cfg: LABEL hd: boots the local disk/);
});

test('a GRUB ISO with an EFI El Torito image (FAT, made by mtools): grub.cfg evaluated as EFI, missing kernels said', async () => {
  const j = await inspectJson(isos.grub!);
  assert.deepEqual(j.bootImages.map((b: any) => [b.platform, b.platformId, b.path, b.size]), [['uefi', 0xef, '/boot/grub/efi.img', 2880 * 1024]]);
  assert.deepEqual(
    j.entries.map((e: any) => [e.menu, e.config, e.title, e.kernel, e.kernelExists, e.initrds.map((i: any) => i.path), e.cmdline, e.default]),
    [
      ['grub', '/boot/grub/grub.cfg', 'Linux (efi)', '/kernel/bzImage', true, ['/kernel/initrd.img', '/kernel/microcode.img'], 'console=ttyS0 quiet', true],
      ['grub', '/boot/grub/grub.cfg', 'Missing kernel', '/kernel/gone', false, [], 'root=/dev/ram0', false],
    ],
  );
  assert.ok(j.skipped.some((s: any) => /Firmware/.test(s.what)));
  const human = await runCli(['iso', 'inspect', isos.grub!]);
  assert.match(human.stdout, /^El Torito +UEFI, no emulation: \/boot\/grub\/efi\.img \(2\.8 MiB at block \d+\)$/m);
  assert.match(human.stdout, /^ {5}kernel {2}\/kernel\/gone \(not on the ISO\)$/m);
  // Outside the tree, the image's size comes from its FAT boot sector (its sector count is only 16 bits).
  const hidden = await inspectJson(isos.hiddenEsp!);
  assert.deepEqual(hidden.bootImages.map((b: any) => [b.platform, b.path, b.size]), [['uefi', null, 2880 * 1024]]);
  assert.equal(hidden.entries.length, 2);
});

test('a Debian live ISO: recognised with its findiso parameter, /.disk/info read, installer entries told apart', async () => {
  const j = await inspectJson(isos.live!);
  assert.equal(j.label, 'd-live 12.5.0 st amd64');
  assert.deepEqual([j.distribution.id, j.distribution.isoParameters], ['debian-live', ['findiso=PATH']]);
  assert.match(j.distribution.info, /^Debian GNU\/Linux 12\.5\.0/);
  assert.deepEqual(
    j.entries.map((e: any) => [e.menu, e.title, e.kernel, e.distribution, e.isoParameters, e.default]),
    [
      ['isolinux', 'Live system (amd64)', '/live/vmlinuz-6.1.0-18-amd64', 'debian-live', ['findiso=PATH'], true],
      ['isolinux', 'Start installer', '/install/vmlinuz', 'debian-installer', [], false],
      ['grub', 'Live system (amd64)', '/live/vmlinuz-6.1.0-18-amd64', 'debian-live', ['findiso=PATH'], true],
    ],
  );
  const human = await runCli(['iso', 'inspect', isos.live!]);
  assert.match(human.stdout, /^distribution +Debian live \(debian-live\), from \/live, boot=live$/m);
  assert.match(human.stdout, /^finds the ISO +findiso=PATH \(live-boot\)$/m);
});

test('an Ubuntu casper ISO (GRUB only, no boot=casper on its command line): recognised by /casper; loopback.cfg not needed', async () => {
  const j = await inspectJson(isos.casper!);
  assert.deepEqual([j.distribution.id, j.distribution.evidence, j.distribution.isoParameters], ['ubuntu-casper', ['/casper'], ['iso-scan/filename=PATH']]);
  assert.deepEqual(j.bootImages, []);
  assert.deepEqual(j.menus, [{ menu: 'grub', path: '/boot/grub/grub.cfg' }]);
  assert.deepEqual(j.entries.map((e: any) => [e.title, e.cmdline]), [['Try or Install Ubuntu', '--- quiet splash'], ['Ubuntu (safe graphics)', 'nomodeset --- quiet splash']]);
  assert.ok(j.skipped.some((s: any) => /Test memory/.test(s.what) && /linux16/.test(s.reason)), JSON.stringify(j.skipped));
});

test('bad input: one line on stderr and exit status 1 each', async () => {
  const notIso = join(dir, 'zeros.img');
  writeFileSync(notIso, Buffer.alloc(64 * 2048));
  const truncated = join(dir, 'truncated.iso');
  writeFileSync(truncated, readFileSync(isos.live!).subarray(0, 100 * 2048));
  const cases: [string, RegExp][] = [
    [notIso, /is not an ISO 9660 image \(no CD001 at sector 16\)$/],
    [dir, /is a directory, not an ISO image file$/],
    [join(dir, 'missing.iso'), /cannot open .*missing\.iso: no such file or directory \(ENOENT\)$/],
    [truncated, /truncated\.iso is truncated: its volume descriptor says \d+ bytes \(\d+ blocks\), there are 204800$/],
    [isos.nomenu!, /nomenu\.iso has no boot menu \(no isolinux\.cfg, syslinux\.cfg or grub\.cfg where isolinux and GRUB look\)$/],
  ];
  for (const [file, want] of cases) {
    const r = await runCli(['iso', 'inspect', file]);
    assert.equal(r.code, 1, `${file}: ${r.stderr}`);
    assert.equal(r.stdout, '');
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^stiefelctl iso: /);
    assert.match(lines[0]!, want);
  }
  const usage = await runCli(['iso', 'boot']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /URL or FILE/);
});

test('property: inspect on damaged copies of a real ISO (bytes flipped in its first 64 sectors, or cut short) succeeds or throws a StiefelError, within a second', async () => {
  const copy = join(dir, 'fuzz-base.iso');
  copyFileSync(isos.live!, copy);
  const base = readFileSync(copy);
  const span = Math.min(base.length, 64 * 2048);
  let errors = 0;
  let successes = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.tuple(fc.nat(span - 1), fc.nat(255)), { minLength: 1, maxLength: 64 }), fc.option(fc.nat(base.length), { freq: 5 }), async (flips, cut) => {
      const img = Buffer.from(base);
      for (const [at, v] of flips) img[at] = v;
      const data = cut === null ? img : img.subarray(0, cut);
      const source: IsoSource = { name: 'damaged.iso', size: data.length, read: async (o, l) => Buffer.from(data.subarray(o, o + l)) };
      const started = Date.now();
      try {
        await inspectIso(source);
        successes++;
      } catch (err) {
        assert.ok(err instanceof StiefelError, `not a StiefelError: ${err instanceof Error ? err.stack : String(err)}`);
        assert.doesNotMatch(err.message, /\n/);
        errors++;
      }
      assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
    }),
    { numRuns: 1000 },
  );
  assert.ok(errors > 0 && successes > 0, `both outcomes seen (${successes} read, ${errors} refused)`);
});
