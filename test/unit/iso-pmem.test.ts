// Keeping a downloaded ISO in RAM across kexec: the region chosen from
// /proc/iomem, its memmap= word, the restart's command line and its
// reading back, and the order the ISO kernel's pmem modules are loaded in.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StiefelError } from '../../src/errors';
import { choosePmemRegion, memmapParameter, parseIomemRam, parseMemmapParameter, pendingIsoBoot, restartCmdline, PMEM_ALIGN, PMEM_MIN_REST } from '../../src/iso/pmem';
import { loadOrder, pmemInitScript } from '../../src/desktop/iso-pmem';
import { buildModuleIndex } from '../../src/kmod/closure';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

// A QEMU q35 guest with 2 GiB (SeaBIOS), as root reads it.
const IOMEM_2G = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
00100000-7ffdffff : System RAM
  01000000-01e00e56 : Kernel code
7ffe0000-7fffffff : Reserved
b0000000-bfffffff : PCI MMCONF 0000 [bus 00-ff]
`;
// 16 GiB: RAM below 4 GiB and above.
const IOMEM_16G = `00001000-0009ffff : System RAM
00100000-bffdffff : System RAM
100000000-43fffffff : System RAM
`;

test('/proc/iomem: the top-level System RAM ranges only', () => {
  assert.deepEqual(parseIomemRam(IOMEM_2G), [{ start: 0x1000, end: 0x9fbff }, { start: 0x100000, end: 0x7ffdffff }]);
  assert.deepEqual(parseIomemRam('00000000-00000000 : System RAM\n'), [], 'what non-root sees: zeros');
});

test('the region: the ISO rounded up to 128 MiB, at the top of the highest RAM that holds it, RAM left beside it', () => {
  const r = choosePmemRegion(parseIomemRam(IOMEM_2G), 51 * MIB);
  assert.deepEqual(r, { start: 1792 * MIB, size: 128 * MIB });
  assert.ok(r.start + r.size <= 0x7ffe0000, 'inside the RAM range');
  assert.equal(memmapParameter(r), 'memmap=128M!1792M');
  assert.deepEqual(parseMemmapParameter('memmap=128M!1792M'), r);
  assert.equal(parseMemmapParameter('memmap=128M$1792M'), undefined, "another kind of memmap= is not ours");
  // A 4.7 GB DVD on 16 GiB: above 4 GiB.
  const big = choosePmemRegion(parseIomemRam(IOMEM_16G), 4.7e9);
  assert.equal(big.size, 4608 * MIB);
  assert.equal(big.start + big.size, 0x440000000);
  // Too big for the RAM, with what must stay free.
  assert.throws(() => choosePmemRegion(parseIomemRam(IOMEM_2G), 1.5 * GIB), (e: unknown) => e instanceof StiefelError && e.code === 'E_ISO_TOO_BIG' && /needs 1536 MiB of RAM kept aside and this machine has 2047 MiB; 768 MiB must stay free/.test(e.message));
  assert.throws(() => choosePmemRegion([], 1), /no System RAM in \/proc\/iomem/);
  // Fragmented RAM: no one range holds it.
  const pieces = Array.from({ length: 8 }, (_, i) => ({ start: i * 512 * MIB, end: i * 512 * MIB + 256 * MIB - 1 }));
  assert.throws(() => choosePmemRegion(pieces, 300 * MIB), /no single range of RAM holds 384 MiB/);
});

test('property: a chosen region lies inside one RAM range, aligned, as big as the ISO, with the rest left free', () => {
  fc.assert(
    fc.property(fc.array(fc.record({ at: fc.integer({ min: 0, max: 64 }), len: fc.integer({ min: 1, max: 64 }) }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 1, max: 8 * 1024 }), (ranges, isoMiB) => {
      const ram = ranges.map(({ at, len }) => ({ start: at * GIB, end: at * GIB + len * 256 * MIB - 1 }));
      try {
        const r = choosePmemRegion(ram, isoMiB * MIB);
        assert.equal(r.start % PMEM_ALIGN, 0);
        assert.equal(r.size % PMEM_ALIGN, 0);
        assert.ok(r.size >= isoMiB * MIB);
        assert.ok(ram.some((x) => r.start >= x.start && r.start + r.size - 1 <= x.end));
        assert.ok(ram.reduce((n, x) => n + x.end + 1 - x.start, 0) - r.size >= PMEM_MIN_REST);
      } catch (err) {
        assert.ok(err instanceof StiefelError, String(err));
      }
    }),
  );
});

test("the restart's command line carries the request, and the restarted stiefelOS reads it back", () => {
  const current = 'BOOT_IMAGE=/stiefelos/vmlinuz initrd=/stiefelos/initrd.img stiefel.role=client console=tty0 console=ttyS0,115200 quiet';
  const p = { url: 'http://10.99.0.1:8080/debian live?x="1"', sha256: 'a'.repeat(64), entry: 3, region: { start: 1792 * MIB, size: 128 * MIB } };
  const line = restartCmdline(current, p);
  assert.equal(line, `stiefel.role=client console=tty0 console=ttyS0,115200 quiet memmap=128M!1792M stiefel.iso=${encodeURIComponent(p.url)} stiefel.iso.entry=3 stiefel.iso.sha256=${'a'.repeat(64)}`);
  assert.doesNotMatch(line, /[" ]1/, 'no blank or quote of the URL reaches the kernel');
  assert.deepEqual(pendingIsoBoot(line), p);
  // A second restart replaces the first request, never adds to it.
  assert.equal(restartCmdline(line, { ...p, entry: 1 }).match(/memmap=|stiefel\.iso=/g)!.length, 2);
  assert.equal(pendingIsoBoot(current), undefined);
  assert.equal(pendingIsoBoot('stiefel.iso=x stiefel.iso.entry=1'), undefined, 'no region: nothing pending');
  assert.equal(pendingIsoBoot('stiefel.iso=%E0%A4%A stiefel.iso.entry=1 memmap=128M!1792M'), undefined, 'a broken encoding');
  assert.deepEqual(pendingIsoBoot('stiefel.iso=https%3A%2F%2Fa%2Fb.iso stiefel.iso.entry=1 memmap=128M!1792M stiefel.iso.sha256=nothex'), { url: 'https://a/b.iso', entry: 1, region: p.region });
  assert.throws(() => restartCmdline(current, { ...p, url: `https://a/${'x'.repeat(2100)}` }), /the URL is too long/);
});

test('the pmem modules in load order (dependencies first), and the init that loads them', () => {
  const index = buildModuleIndex({
    dep: [
      'kernel/drivers/nvdimm/nd_pmem.ko: kernel/drivers/nvdimm/nd_btt.ko kernel/drivers/nvdimm/libnvdimm.ko',
      'kernel/drivers/nvdimm/nd_btt.ko: kernel/drivers/nvdimm/libnvdimm.ko',
      'kernel/drivers/nvdimm/libnvdimm.ko:',
      'kernel/drivers/nvdimm/nd_e820.ko: kernel/drivers/nvdimm/libnvdimm.ko',
      '',
    ].join('\n'),
  });
  const order = loadOrder(index, ['kernel/drivers/nvdimm/nd_e820.ko', 'kernel/drivers/nvdimm/nd_pmem.ko', 'kernel/drivers/nvdimm/libnvdimm.ko', 'kernel/drivers/nvdimm/nd_btt.ko']);
  assert.deepEqual(order.map((p) => p.split('/').pop()), ['libnvdimm.ko', 'nd_e820.ko', 'nd_btt.ko', 'nd_pmem.ko']);
  const script = pmemInitScript(['libnvdimm.ko', 'nd_pmem.ko']);
  assert.match(script, /^#!\/stiefel-pmem\/busybox sh\n/);
  assert.match(script, /for m in libnvdimm\.ko nd_pmem\.ko; do/);
  assert.match(script, /\nexec \/init "\$@"\n$/);
});
