// Every layout parser against real distributions' files, compared with the
// expected output beside each fixture (`*.expected.json`). Regenerate them
// after a deliberate change with STIEFEL_UPDATE_FIXTURES=1 and review the diff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compareVersions } from '../../src/boot-entries/version';
import { compareBlsEntries, globMatch, parseBlsEntry, parseBootCounting, parseLoaderConf, pickBlsDefault, type BlsEntry } from '../../src/boot-entries/bls';
import { parseGrubConfig, parseGrubEnv } from '../../src/boot-entries/grub';
import { parseSyslinux } from '../../src/boot-entries/syslinux';
import { findKernelPairs } from '../../src/boot-entries/kernel-pairs';
import { parseOverride } from '../../src/boot-entries/override';

const FIX = join(__dirname, '..', 'fixtures', 'boot-entries');

function expectFixture(name: string, actual: unknown): void {
  const file = join(FIX, `${name}.expected.json`);
  const text = `${JSON.stringify(actual, null, 2)}\n`;
  if (process.env.STIEFEL_UPDATE_FIXTURES === '1' || !existsSync(file)) {
    if (process.env.STIEFEL_UPDATE_FIXTURES !== '1') assert.fail(`${file} is missing: run with STIEFEL_UPDATE_FIXTURES=1 and review it`);
    writeFileSync(file, text);
  }
  assert.deepEqual(JSON.parse(text), JSON.parse(readFileSync(file, 'utf8')));
}

test('version comparison follows the UAPI version format (systemd strverscmp_improved)', () => {
  // The order documented in systemd's strverscmp_improved(), oldest first.
  const ordered = ['122.1', '123~rc1-1', '123', '123-a', '123-a.1', '123-1', '123-1.1', '123^post1', '123.a-1', '123.1-1', '123a-1', '124-1'];
  for (let i = 0; i < ordered.length; i++) {
    for (let j = 0; j < ordered.length; j++) {
      assert.equal(compareVersions(ordered[i], ordered[j]), Math.sign(i - j), `${ordered[i]} vs ${ordered[j]}`);
    }
  }
  assert.equal(compareVersions('6.10.6-200.fc40.x86_64', '6.9.12-200.fc40.x86_64'), 1);
  assert.equal(compareVersions('6.1.0-18-amd64', '6.1.0-9-amd64'), 1);
  assert.equal(compareVersions('00123', '123'), 0);
  assert.equal(compareVersions('', '1'), -1);
  assert.equal(compareVersions(null, null), 0);
});

test('BLS entries sort as systemd-boot sorts them (systemd test-bootspec vector)', () => {
  const files: [string, string][] = [
    ['a-10.conf', 'title A\nversion 10\nmachine-id dd235d00696545768f6f693bfd23b15f\nlinux /a\n'],
    ['a-5.conf', 'title A\nversion 5\nmachine-id dd235d00696545768f6f693bfd23b15f\nlinux /a\n'],
    ['b.conf', 'title B\nversion 3\nmachine-id b75451ad92f94feeab50b0b442768dbd\nlinux /b\n'],
    ['c.conf', 'title C\nsort-key xxxx\nversion 5\nmachine-id 309de666fd5044268a9a26541ac93176\nlinux /c\n'],
    ['cx.conf', 'title C\nsort-key xxxx\nversion 10\nmachine-id 309de666fd5044268a9a26541ac93176\nlinux /c\n'],
    ['d.conf', 'title D\nsort-key kkkk\nversion 100\nmachine-id 81c6e3147cf544c19006af023e22b292\nlinux /d\n'],
  ];
  const entries = files.map(([n, t]) => parseBlsEntry(n, t).entry!).sort(compareBlsEntries);
  assert.deepEqual(entries.map((e) => e.id), ['d.conf', 'cx.conf', 'c.conf', 'b.conf', 'a-10.conf', 'a-5.conf']);
});

test('boot counting: entries without tries left sort last, the suffix is not part of the id', () => {
  assert.deepEqual(parseBootCounting('fedora+3-1.conf'), { id: 'fedora.conf', triesLeft: 3, triesDone: 1 });
  assert.deepEqual(parseBootCounting('arch.conf'), { id: 'arch.conf', triesLeft: -1, triesDone: -1 });
  const bad = parseBlsEntry('z+0-3.conf', 'linux /z\n').entry!;
  const good = parseBlsEntry('a.conf', 'linux /a\n').entry!;
  assert.deepEqual([bad, good].sort(compareBlsEntries).map((e) => e.id), ['a.conf', 'z.conf']);
});

function blsFixture(dir: string): unknown {
  const root = join(FIX, 'bls', dir);
  const envFile = join(root, 'grub2', 'grubenv');
  const grubEnv = existsSync(envFile) ? parseGrubEnv(readFileSync(envFile, 'utf8')).vars : undefined;
  const loaderFile = join(root, 'loader', 'loader.conf');
  const pattern = existsSync(loaderFile) ? parseLoaderConf(readFileSync(loaderFile, 'utf8')).default : null;
  const names = readdirSync(join(root, 'loader', 'entries')).sort();
  const parsed = names.map((n) => parseBlsEntry(n, readFileSync(join(root, 'loader', 'entries', n), 'utf8'), grubEnv ? { grubEnv } : {}));
  const entries = parsed.flatMap((p) => (p.entry ? [p.entry] : [])).sort(compareBlsEntries) as BlsEntry[];
  const def = pickBlsDefault(entries.map((e) => e.id), pattern);
  return {
    entries: entries.map((e) => e.candidate),
    default: entries[def.index]?.id ?? null,
    skipped: parsed.flatMap((p) => (p.skipped ? [p.skipped] : [])),
    notes: parsed.flatMap((p) => p.notes),
  };
}

test('Fedora 40 BootLoaderSpec entries: newest kernel first, rescue last', () => {
  const r = blsFixture('fedora-40') as { entries: { version: string }[]; default: string };
  assert.equal(r.entries[0]!.version, '6.10.6-200.fc40.x86_64');
  assert.equal(r.default, '3a9c1e5f0b2d4e7a8c6b1d0e2f4a6b8c-6.10.6-200.fc40.x86_64.conf');
  expectFixture('bls/fedora-40', r);
});

test('Fedora $kernelopts entries take their command line from grubenv', () => {
  const r = blsFixture('fedora-kernelopts') as { entries: { cmdline: string; initrds: unknown[] }[] };
  assert.equal(r.entries[0]!.cmdline, 'root=UUID=b6b8fa59-92cc-4d03-8d8f-d66dab76d433 ro rootflags=subvol=root rhgb quiet');
  assert.equal(r.entries[0]!.initrds.length, 1);
  expectFixture('bls/fedora-kernelopts', r);
  // Without a grubenv the command line is unknown: the entry is skipped, not guessed.
  const text = readFileSync(join(FIX, 'bls', 'fedora-kernelopts', 'loader', 'entries', 'abc1234-6.8.5-200.fc39.x86_64.conf'), 'utf8');
  const bare = parseBlsEntry('x.conf', text);
  assert.equal(bare.entry, undefined);
  assert.match(bare.skipped!.reason, /\$kernelopts.*no grubenv/);
});

test('Arch systemd-boot: loader.conf default, microcode initrd first', () => {
  const r = blsFixture('arch') as { entries: { id: string; initrds: { path: string }[] }[]; default: string };
  assert.equal(r.default, 'arch.conf');
  assert.deepEqual(r.entries.find((e) => e.id === 'arch.conf')!.initrds.map((i) => i.path), ['/amd-ucode.img', '/initramfs-linux.img']);
  expectFixture('bls/arch', r);
});

test('loader.conf default globs', () => {
  assert.equal(globMatch('fedora-*', 'fedora-6.1.conf'), true);
  assert.equal(globMatch('arch-?.conf', 'arch-1.conf'), true);
  assert.equal(globMatch('arch-[0-9].conf', 'arch-x.conf'), false);
  assert.deepEqual(pickBlsDefault(['b.conf', 'a.conf'], 'a'), { index: 1, note: 'loader.conf default "a" chose a.conf' });
  assert.equal(pickBlsDefault(['b.conf', 'a.conf'], 'zzz').index, 0);
});

const ALL_MISSING = () => false;

test('Debian 12 grub.cfg (real grub-mkconfig output)', () => {
  const text = readFileSync(join(FIX, 'grub', 'debian-12-grub.cfg'), 'utf8');
  const r = parseGrubConfig(text, { prefix: '/boot/grub', exists: ALL_MISSING });
  assert.equal(r.candidates.length, 3);
  assert.equal(r.candidates[0]!.isDefault, true);
  assert.deepEqual(r.candidates[0]!.root, { kind: 'fs-uuid', value: '2f3a1c9e-5b7d-4e21-9a60-3c1b8d2e7f45' });
  expectFixture('grub/debian-12-grub', r);
});

test('Ubuntu grub.cfg: $vt_handoff comes from the gfxmode function, non-Linux entries are skipped', () => {
  const text = readFileSync(join(FIX, 'grub', 'ubuntu-14.04-grub.cfg'), 'utf8');
  const r = parseGrubConfig(text, { prefix: '/boot/grub', exists: ALL_MISSING });
  assert.equal(r.candidates[0]!.cmdline, 'root=UUID=840d7d90-0601-49a8-b8ae-d120c83544e9 ro quiet splash vt.handoff=7');
  assert.deepEqual(r.skipped.map((s) => s.reason), ['not a Linux kernel entry (uses knetbsd)', 'not a Linux kernel entry (uses linux16)', 'not a Linux kernel entry (uses chainloader)']);
  expectFixture('grub/ubuntu-14.04-grub', r);
  // When a file test cannot be answered, $vt_handoff is unknown: the entries are skipped with the reason.
  // (the recovery entry does not use it and stays).
  const unknown = parseGrubConfig(text, { prefix: '/boot/grub' });
  assert.deepEqual(unknown.candidates.map((c) => c.cmdline), ['root=UUID=840d7d90-0601-49a8-b8ae-d120c83544e9 ro recovery nomodeset']);
  assert.match(unknown.skipped[0]!.reason, /gfxblacklist\.txt/);
});

test('grub: default by id path, saved_entry from grubenv, $root-relative paths and variables', () => {
  const cfg = `
load_env
set default="\${saved_entry}"
set kver=6.1.0-18-amd64
menuentry 'First' --id first { linux /vmlinuz-first root=/dev/sda1 }
submenu 'More' --id more {
  menuentry 'Second' --id second {
    set root='hd0,gpt3'
    linux (\$root)/vmlinuz-\${kver} root=/dev/sda3 \${extra}
    initrd /intel-ucode.img /initrd.img-\${kver}
  }
}
`;
  const env = new Map([['saved_entry', 'more>second'], ['extra', 'quiet splash']]);
  const r = parseGrubConfig(cfg, { prefix: '/grub', grubEnv: env });
  const second = r.candidates.find((c) => c.id === 'second')!;
  assert.equal(second.isDefault, true);
  assert.equal(second.kernel.path, '/vmlinuz-6.1.0-18-amd64');
  assert.deepEqual(second.root, { kind: 'device', value: 'hd0,gpt3' });
  assert.equal(second.cmdline, 'root=/dev/sda3 quiet splash');
  assert.deepEqual(second.initrds.map((i) => i.path), ['/intel-ucode.img', '/initrd.img-6.1.0-18-amd64']);
  assert.equal(r.candidates.find((c) => c.id === 'first')!.isDefault, false);
  // Numeric paths select the same entry.
  assert.equal(parseGrubConfig(cfg.replace('set default="${saved_entry}"', 'set default="1>0"'), { prefix: '/grub', grubEnv: env }).candidates.find((c) => c.isDefault)!.id, 'second');
});

test('grub: what cannot be evaluated is reported, not guessed', () => {
  const cfg = `
if hwmatch foo; then set opts=a; else set opts=b; fi
if loadfont unicode; then menuentry 'Maybe' { linux /vmlinuz-maybe }; fi
menuentry 'Uses opts' { linux /vmlinuz-x \$opts }
menuentry 'Fine' { linux /vmlinuz-y ro }
while true; do set z=1; done
blscfg
`;
  const r = parseGrubConfig(cfg, { prefix: '/grub' });
  assert.deepEqual(r.candidates.map((c) => c.title), ['Fine']);
  const reasons = Object.fromEntries(r.skipped.map((s) => [s.what.replace(/.*: /, ''), s.reason]));
  assert.match(reasons['"Maybe"']!, /defined only if `if loadfont unicode; then/);
  assert.match(reasons['"Uses opts"']!, /cannot be known.*hwmatch/);
  assert.equal(r.usesBlscfg, true);
});

test('Alpine extlinux.conf: UI default with no MENU DEFAULT picks the first label; paths are relative to the config', () => {
  const text = readFileSync(join(FIX, 'syslinux', 'alpine-extlinux.conf'), 'utf8');
  const r = parseSyslinux(text, { path: '/boot/extlinux.conf' });
  assert.equal(r.candidates[0]!.kernel.path, '/boot/vmlinuz-virt');
  assert.equal(r.candidates[0]!.isDefault, true);
  expectFixture('syslinux/alpine-extlinux', r);
  const lts = parseSyslinux(readFileSync(join(FIX, 'syslinux', 'alpine-extlinux-lts.conf'), 'utf8'), { path: '/extlinux.conf' });
  assert.equal(lts.candidates[0]!.cmdline, 'root=UUID=re-mov-ed-uu-id modules=sd-mod,usb-storage,ext4 console=ttyS0,9600');
  expectFixture('syslinux/alpine-extlinux-lts', lts);
});

test('syslinux: DEFAULT label, global APPEND, initrd= in APPEND, INCLUDE, modules skipped', () => {
  const main = 'APPEND quiet\nDEFAULT two\nINCLUDE more.cfg\nLABEL one\n  LINUX /vmlinuz-1\nLABEL hdt\n  KERNEL hdt.c32\n';
  const more = 'LABEL two\n  KERNEL vmlinuz-2\n  APPEND initrd=initrd-2a,initrd-2b ro\nLABEL local\n  LOCALBOOT 0\n';
  const r = parseSyslinux(main, { path: '/syslinux/syslinux.cfg', readFile: (p) => (p === '/syslinux/more.cfg' ? more : undefined) });
  assert.deepEqual(r.candidates.map((c) => [c.id, c.isDefault, c.cmdline]), [['two', true, 'ro'], ['one', false, 'quiet']]);
  assert.deepEqual(r.candidates[0]!.initrds.map((i) => i.path), ['/syslinux/initrd-2a', '/syslinux/initrd-2b']);
  assert.equal(r.skipped.length, 2);
});

test('kernel pairs: newest first by version, each initrd naming convention, microcode first, missing initrd skipped', () => {
  const r = findKernelPairs('/boot', ['vmlinuz-6.1.0-9-amd64', 'initrd.img-6.1.0-9-amd64', 'vmlinuz-6.1.0-18-amd64', 'initrd.img-6.1.0-18-amd64', 'vmlinuz-5.10.0-1', 'vmlinuz', 'config-6.1.0-18-amd64']);
  assert.deepEqual(r.candidates.map((c) => c.version), ['6.1.0-18-amd64', '6.1.0-9-amd64']);
  assert.equal(r.candidates[0]!.isDefault, true);
  assert.equal(r.skipped[0]!.what, '/boot/vmlinuz-5.10.0-1');
  const fedora = findKernelPairs('/', ['vmlinuz-6.8.5-200.fc39.x86_64', 'initramfs-6.8.5-200.fc39.x86_64.img']);
  assert.equal(fedora.candidates[0]!.initrds[0]!.path, '/initramfs-6.8.5-200.fc39.x86_64.img');
  const arch = findKernelPairs('/', ['vmlinuz-linux', 'initramfs-linux.img', 'intel-ucode.img', 'initramfs-linux-fallback.img'], { cmdline: 'root=/dev/x rw' });
  assert.deepEqual(arch.candidates[0]!.initrds.map((i) => i.path), ['/intel-ucode.img', '/initramfs-linux.img']);
  assert.equal(arch.candidates[0]!.cmdline, 'root=/dev/x rw');
  const suse = findKernelPairs('/boot', ['vmlinuz-6.4.0-150600.23-default', 'initrd-6.4.0-150600.23-default']);
  assert.equal(suse.candidates.length, 1);
});

test('override file: kernel, initrds in order, cmdline; bad files are skipped with the reason', () => {
  const r = parseOverride(JSON.stringify({ kernel: 'vmlinuz-6.1', initrds: ['ucode.img', 'initrd.img-6.1'], cmdline: 'root=/dev/sda2 ro' }));
  assert.deepEqual(r.candidates[0]!.initrds.map((i) => i.path), ['/ucode.img', '/initrd.img-6.1']);
  assert.equal(r.candidates[0]!.cmdline, 'root=/dev/sda2 ro');
  assert.match(parseOverride('{').skipped[0]!.reason, /not valid JSON/);
  assert.match(parseOverride('{"initrd":"x"}').skipped[0]!.reason, /"kernel"/);
  assert.match(parseOverride('{"kernel":"k","initrd":"a","initrds":["b"]}').skipped[0]!.reason, /either/);
});
