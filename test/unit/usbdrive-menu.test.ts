// The stick's boot menu as both boot loaders read it, checked with the
// project's own readers of syslinux.cfg and BootLoaderSpec entries (which
// follow syslinux's and systemd-boot's rules): three entries in order, the
// client the default, the config's words last on every command line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareBlsEntries, parseBlsEntry, parseLoaderConf, pickBlsDefault } from '../../src/boot-entries/bls';
import { parseSyslinux } from '../../src/boot-entries/syslinux';
import { ESP_PATHS, STICK_CONSOLES, loaderConf, loaderEntry, loaderEntryFileName, stickMenu, stickReadme, syslinuxConfig } from '../../src/usbdrive/menu';

const menu = stickMenu({ cmdlineAppend: 'quiet  ipv6.disable=0' });

test('three entries: client (default), the client with debug messages, the rescue shell; consoles serial first, screen last', () => {
  assert.deepEqual(menu.map((e) => e.id), ['client', 'debug', 'rescue']);
  assert.deepEqual(menu.map((e) => e.cmdline), [
    'console=ttyS0,115200 console=tty0 stiefel.role=client quiet ipv6.disable=0',
    'console=ttyS0,115200 console=tty0 stiefel.role=client debug STIEFEL_DEBUG=* quiet ipv6.disable=0',
    'console=ttyS0,115200 console=tty0 stiefel.role=rescue quiet ipv6.disable=0',
  ]);
  // The last console= is /dev/console, where input is read: the screen.
  assert.match(STICK_CONSOLES, /console=tty0$/);
  assert.deepEqual(stickMenu({ cmdlineAppend: '' })[0]!.cmdline, 'console=ttyS0,115200 console=tty0 stiefel.role=client');
});

test('syslinux.cfg: SERIAL first, menu.c32, 3 s, and the entries as syslinux reads them', () => {
  const cfg = syslinuxConfig(menu);
  assert.equal(cfg.split('\n')[0], 'SERIAL 0 115200', 'SERIAL must be the first directive');
  assert.match(cfg, /^UI menu\.c32$/m);
  assert.match(cfg, /^TIMEOUT 30$/m);
  assert.match(cfg, /^DEFAULT client$/m);
  const r = parseSyslinux(cfg, { path: ESP_PATHS.syslinuxCfg });
  assert.deepEqual(r.skipped, []);
  assert.deepEqual(
    r.candidates.map((c) => [c.title, c.kernel.path, c.initrds.map((i) => i.path), c.cmdline, c.isDefault]),
    menu.map((e, i) => [e.title, ESP_PATHS.kernel, [ESP_PATHS.initrd], e.cmdline, i === 0]),
  );
});

test('systemd-boot: entries sort in menu order by sort-key, loader.conf picks the client, 3 s', () => {
  const entries = menu.map((e, i) => {
    const name = loaderEntryFileName(e, i);
    const r = parseBlsEntry(name, loaderEntry(e, i));
    assert.ok(r.entry, `${name}: ${JSON.stringify(r.skipped)}`);
    return r.entry;
  });
  // Shuffled, then sorted as systemd-boot sorts.
  const sorted = [entries[2]!, entries[0]!, entries[1]!].sort(compareBlsEntries);
  assert.deepEqual(sorted.map((e) => e.candidate.cmdline), menu.map((e) => e.cmdline));
  for (const e of sorted) {
    assert.equal(e.candidate.kernel.path, ESP_PATHS.kernel);
    assert.deepEqual(e.candidate.initrds.map((i) => i.path), [ESP_PATHS.initrd]);
  }
  const conf = loaderConf(menu);
  assert.match(conf, /^timeout 3$/m);
  const picked = pickBlsDefault(sorted.map((e) => e.id), parseLoaderConf(conf).default);
  assert.equal(sorted[picked.index]!.candidate.cmdline, menu[0]!.cmdline);
});

test('a line break in a title or command line cannot reach the files', () => {
  assert.throws(() => syslinuxConfig([{ ...menu[0]!, cmdline: 'a\nDEFAULT evil' }]), /line break/);
  assert.throws(() => loaderEntry({ ...menu[0]!, title: 'x\rinitrd /evil' }, 0), /line break/);
});

test("the stick's note says it is a key to the laptop's disk", () => {
  assert.match(stickReadme(), /key to the laptop's disk/);
});
