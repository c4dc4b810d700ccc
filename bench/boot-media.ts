// npm run bench:boot-media [-- --runs N]
//
// Power-on of the desktop VM to its stiefelOS client running, by the stick
// and by PXE from the laptop, under SeaBIOS and under OVMF, in one run,
// alternating (test/helpers/e2e.ts with untilClient: the laptop VM serves
// first, then the desktop starts). Software-emulated QEMU: the ratios carry
// over, the seconds are this machine's.
import { parseArgs } from 'node:util';
import { E2E_CACHE_DIR, runEndToEnd } from '../test/helpers/e2e';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '1' } } });
const runs = Number(values.runs);
const VARIANTS = ['bios-stick', 'bios-pxe', 'uefi-stick', 'uefi-pxe'] as const;
type Variant = (typeof VARIANTS)[number];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespace, QEMU taps)');
  const seconds = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]));
  const split = new Map<Variant, string>();
  for (let i = 0; i < runs; i++) {
    for (const v of VARIANTS) {
      const r = await runEndToEnd({ family: 'initramfs-tools', cacheDir: E2E_CACHE_DIR, desktopBoot: v, untilClient: true, timeScale: 3, log: (l) => console.error(`[${v} ${i + 1}/${runs}] ${l}`) });
      seconds.get(v)!.push(r.totalSeconds);
      split.set(v, r.stages.map((s) => `${s.name} ${s.seconds.toFixed(1)} s`).join(', '));
    }
  }
  const lines = ['| firmware | stick (s) | PXE (s) | PXE / stick | PXE stages (last run) |', '| --- | --- | --- | --- | --- |'];
  for (const fw of ['bios', 'uefi'] as const) {
    const stick = median(seconds.get(`${fw}-stick`)!);
    const pxe = median(seconds.get(`${fw}-pxe`)!);
    lines.push(`| ${fw === 'bios' ? 'SeaBIOS' : 'OVMF'} | ${stick.toFixed(1)} | ${pxe.toFixed(1)} | ${(pxe / stick).toFixed(2)}x | ${split.get(`${fw}-pxe`)} |`);
  }
  console.log(`Desktop power-on to its stiefelOS client running (median of ${runs}):\n\n${lines.join('\n')}`);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
