// The stick writer's order and its failure behaviour, on plain files standing
// in for a disk (the disk layer repeats the essentials on a loop device):
// old signatures go first, the partition table last; the ESP is read back
// before the table is written; an interruption or a read-back mismatch
// leaves no boot code and no partition table behind; an image file appears
// whole, mode 0600, or not at all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StiefelError } from '../../src/errors';
import { GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE, GPT_TYPE_ESP, encodeGpt } from '../../src/usbdrive/gpt';
import { MiB, planStick } from '../../src/usbdrive/layout';
import { diskWritePlan, executePlan, imageWritePlan, writeDisk, writeImageFile, type StickBytes, type WriteProgress } from '../../src/usbdrive/writer';

const dir = mkdtempSync(join(tmpdir(), 'stf13-writer-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function stickFor(diskBytes: number | undefined, espBytes = 40 * MiB): StickBytes {
  const layout = planStick({ files: [{ path: '/f', size: espBytes - 8 * MiB }], deviceBytes: diskBytes });
  const espPath = join(dir, `esp-${Math.random().toString(16).slice(2)}.img`);
  // Recognisable ESP bytes: every 512-byte sector says which it is.
  const esp = Buffer.alloc(layout.esp.bytes);
  for (let s = 0; s < esp.length / 512; s += 97) esp.write(`esp sector ${s}`, s * 512);
  writeFileSync(espPath, esp);
  const gpt = encodeGpt({
    diskSectors: layout.diskSectors,
    diskGuid: '5a1e0c4e-3b7a-4f2e-9d1c-0123456789ab',
    bootCode: Buffer.alloc(440, 0xfa),
    partitions: [{ typeGuid: GPT_TYPE_ESP, uniqueGuid: 'd2c3b4a5-9687-4a3b-8c1d-fedcba987654', firstLba: layout.esp.firstLba, lastLba: layout.esp.lastLba, attributes: [GPT_ATTRIBUTE_LEGACY_BIOS_BOOTABLE], name: 'stiefelsystem' }],
  });
  return { layout, gpt, espPath };
}

/** A "disk" full of an old stick's bytes: 0xAB everywhere, an MBR signature, a GPT header. */
function oldDisk(bytes: number): string {
  const path = join(dir, `disk-${Math.random().toString(16).slice(2)}.img`);
  const b = Buffer.alloc(bytes, 0xab);
  b[510] = 0x55;
  b[511] = 0xaa;
  b.write('EFI PART', 512, 'latin1');
  b.write('EFI PART', bytes - 512, 'latin1');
  writeFileSync(path, b);
  return path;
}

test('the disk plan: wipe both ends, write and verify the ESP and backup GPT, then the primary GPT, sector 0 last', () => {
  const s = stickFor(256 * MiB);
  const plan = diskWritePlan(s);
  const writes = plan.flatMap((st, i) => (st.kind === 'zero' || st.kind === 'bytes' || st.kind === 'file' ? [{ i, st }] : []));
  // First: zeros over the first and the last MiB.
  assert.deepEqual(writes.slice(0, 2).map(({ st }) => [st.kind, st.offset, 'length' in st ? st.length : 0]), [
    ['zero', 0, MiB],
    ['zero', 256 * MiB - MiB, MiB],
  ]);
  // Last write: sector 0, right after the commit marker.
  const last = writes.at(-1)!;
  assert.equal(last.st.offset, 0);
  assert.equal(last.st.kind === 'bytes' && last.st.data.length, 512);
  assert.equal(plan[last.i - 1]!.kind, 'commit');
  // The ESP is verified before any partition table byte is written.
  const espVerify = plan.findIndex((st) => st.kind === 'verify');
  const firstTable = plan.findIndex((st) => st.kind === 'bytes' && st.offset < MiB);
  assert.ok(espVerify > 0 && espVerify < firstTable);
  // A sync between every phase.
  for (const i of [espVerify, firstTable, last.i]) assert.ok(plan.slice(0, i).some((st) => st.kind === 'sync'));
});

test('a disk written by the plan holds exactly the stick, the rest of the old bytes untouched beyond the ends', async () => {
  const disk = oldDisk(96 * MiB);
  const s = stickFor(96 * MiB);
  const phases: WriteProgress[] = [];
  await writeDisk(disk, s, { progress: (p) => phases.push(p) });
  const b = readFileSync(disk);
  assert.ok(b.subarray(0, s.gpt.primary.length).equals(s.gpt.primary));
  assert.ok(b.subarray(s.gpt.primary.length, MiB).equals(Buffer.alloc(MiB - s.gpt.primary.length)), 'the rest of the first MiB is wiped');
  assert.ok(b.subarray(s.layout.esp.offset, s.layout.esp.offset + s.layout.esp.bytes).equals(readFileSync(s.espPath)));
  assert.ok(b.subarray(s.gpt.backupLba * 512).equals(s.gpt.backup));
  const tail = b.subarray(96 * MiB - MiB, s.gpt.backupLba * 512);
  assert.ok(tail.equals(Buffer.alloc(tail.length)), 'the last MiB is wiped before the backup GPT');
  const between = b.subarray(s.layout.usedBytes, 96 * MiB - MiB);
  assert.ok(between.every((x) => x === 0xab), 'between the ESP and the last MiB nothing was written');
  assert.deepEqual([...new Set(phases.map((p) => p.phase))], ['wiping', 'writing', 'verifying', 'partition table']);
  for (const p of phases) assert.ok(p.done <= p.total);
});

test('interrupted while writing the ESP: sector 0 and the GPT are gone (the disk boots nowhere), and it says so', async () => {
  const disk = oldDisk(96 * MiB);
  const s = stickFor(96 * MiB);
  const ac = new AbortController();
  await assert.rejects(
    writeDisk(disk, s, {
      signal: ac.signal,
      progress: (p) => {
        if (p.phase === 'writing' && p.done >= 8 * MiB) ac.abort();
      },
    }),
    (err: unknown) => {
      assert.ok(err instanceof StiefelError);
      assert.equal(err.code, 'E_ABORTED');
      assert.equal(err.message, `interrupted: ${disk} holds no partition table now, so it boots nowhere; run the command again`);
      return true;
    },
  );
  const b = readFileSync(disk);
  assert.ok(b.subarray(0, MiB).equals(Buffer.alloc(MiB)), 'no MBR, no primary GPT');
  assert.ok(b.subarray(b.length - MiB).equals(Buffer.alloc(MiB)), 'no backup GPT');
});

test('the ESP reads back wrong: nothing of the partition table is written', async () => {
  const disk = oldDisk(96 * MiB);
  const s = stickFor(96 * MiB);
  let corrupted = false;
  await assert.rejects(
    writeDisk(disk, s, {
      // Stands in for a medium that drops writes: between writing and reading back.
      dropCache: async () => {
        if (corrupted) return;
        corrupted = true;
        const fh = await open(disk, 'r+');
        await fh.write(Buffer.from('flipped'), 0, 7, s.layout.esp.offset + 5 * MiB);
        await fh.close();
      },
    }),
    /writing .* failed: what was read back from the target at offset \d+ differs from what was written: the medium may be failing or fake-sized; .* holds no partition table now/,
  );
  assert.ok(readFileSync(disk).subarray(0, MiB).equals(Buffer.alloc(MiB)));
});

test('the partition table reads back wrong after sector 0 was written: sector 0 is wiped again', async () => {
  const disk = oldDisk(96 * MiB);
  const s = stickFor(96 * MiB);
  let calls = 0;
  await assert.rejects(
    writeDisk(disk, s, {
      dropCache: async () => {
        calls += 1;
        if (calls !== 2) return;
        const fh = await open(disk, 'r+');
        await fh.write(Buffer.from('x'), 0, 1, 600); // inside the primary GPT header
        await fh.close();
      },
    }),
    /differs from what was written/,
  );
  assert.equal(calls, 2);
  assert.ok(readFileSync(disk).subarray(0, 512).equals(Buffer.alloc(512)), 'sector 0 wiped again: the BIOS finds no boot code');
});

test('an image file: written whole as mode 0600 and renamed into place; sparse where the ESP is empty; no temp file left', async () => {
  const s = stickFor(undefined);
  const target = join(dir, 'stick.img');
  writeFileSync(target, 'an old file', { mode: 0o644 });
  const r = await writeImageFile(target, s, {});
  assert.equal(r.bytesWritten, s.layout.diskBytes);
  const st = statSync(target);
  assert.equal(st.size, s.layout.diskBytes);
  assert.equal(st.mode & 0o777, 0o600);
  assert.ok(st.blocks * 512 < s.layout.diskBytes, 'holes where the ESP is zero');
  const b = readFileSync(target);
  assert.ok(b.subarray(0, s.gpt.primary.length).equals(s.gpt.primary));
  assert.ok(b.subarray(s.gpt.backupLba * 512).equals(s.gpt.backup));
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), []);
});

test('an interrupted image file leaves the old file as it was and no temp file', async () => {
  const s = stickFor(undefined);
  const target = join(dir, 'kept.img');
  writeFileSync(target, 'the old contents');
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(writeImageFile(target, s, { signal: ac.signal }), new RegExp(`^StiefelError: interrupted: ${target} was not written$`));
  assert.equal(readFileSync(target, 'utf8'), 'the old contents');
  assert.deepEqual(readdirSync(dir).filter((n) => n.includes('.tmp-')), []);
});

test('executePlan on an image plan verifies what it wrote', async () => {
  const s = stickFor(undefined);
  const path = join(dir, 'plain.img');
  const fh = await open(path, 'w+');
  await fh.truncate(s.layout.diskBytes);
  await executePlan(fh, imageWritePlan(s), {});
  await fh.close();
  assert.ok(readFileSync(path).subarray(s.layout.esp.offset, s.layout.esp.offset + 20).equals(Buffer.from('esp sector 0\0\0\0\0\0\0\0\0')));
});
