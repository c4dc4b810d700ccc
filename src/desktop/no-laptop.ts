// The stick's stiefelOS when no laptop answered: the menu on the console,
// and what each choice does. An ISO that cannot boot (a wrong checksum, a
// dropped download, a live ISO) says why in one line and the menu comes
// back; only a booted ISO or the rescue shell leave it.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { posix } from 'node:path';
import { StiefelError } from '../errors';
import type { Logger } from '../log';
import type { QuestionAnswerer } from '../payload/questions';
import { runChecked, type CommandRunner } from '../disk/runner';
import { menuItems, menuText, parseChoice, type MenuChoice } from './no-laptop-menu';
import type { IsoBootRequest } from './iso-source';

export interface NoLaptopOptions {
  why: string;
  isos: readonly string[];
  answerer: QuestionAnswerer;
  /** Draws on the console (stiefelOS copies it to every console). */
  print(text: string): void;
  /** Boots an ISO; returns only when it did not (the error says why). */
  bootIso(request: Pick<IsoBootRequest, 'target' | 'sha256' | 'sums'>): Promise<void>;
  runner: CommandRunner;
}

export type NoLaptopOutcome = 'look' | 'shell';

async function ask(o: NoLaptopOptions, prompt: string, signal: AbortSignal): Promise<string> {
  return (await o.answerer.answer({ id: randomBytes(8).toString('hex'), kind: 'text', prompt, fromLaptop: false }, { signal })).trim();
}

/** ISO files on the USB disks (and other disks): each file system with one mounted read-only, *.iso up to one directory down. */
export async function isosOnDisks(runner: CommandRunner, mountRoot = '/run/stiefel-media'): Promise<string[]> {
  const names = await fs.readdir('/sys/class/block').catch(() => [] as string[]);
  const found: string[] = [];
  for (const name of names.sort()) {
    if (/^(loop|ram|zram|nbd|dm-|sr)/.test(name)) continue;
    const dev = `/dev/${name}`;
    const r = await runner.run('blkid', ['-o', 'value', '-s', 'TYPE', dev]);
    const type = r.stdout.trim();
    if (!['vfat', 'exfat', 'ext2', 'ext3', 'ext4', 'iso9660', 'btrfs', 'xfs', 'ntfs3'].includes(type)) continue;
    const dir = posix.join(mountRoot, name);
    await fs.mkdir(dir, { recursive: true });
    const mounted = await runner.run('mount', ['-o', 'ro', '-t', type, dev, dir]);
    if (mounted.code !== 0 && !/already mounted/.test(mounted.stderr)) continue;
    for (const sub of ['', ...(await fs.readdir(dir, { withFileTypes: true }).catch(() => [])).filter((d) => d.isDirectory()).map((d) => d.name)]) {
      const here = posix.join(dir, sub);
      for (const f of await fs.readdir(here).catch(() => [] as string[])) if (/\.iso$/i.test(f)) found.push(posix.join(here, f));
    }
  }
  return found;
}

export async function noLaptopMenu(o: NoLaptopOptions, ctx: { log: Logger; signal: AbortSignal }): Promise<NoLaptopOutcome> {
  const items = menuItems(o.isos);
  let why = o.why;
  for (;;) {
    o.print(menuText(why, items));
    const typed = await ask(o, `Choice (${items.map((i) => i.key).join(', ')}):`, ctx.signal);
    const choice: MenuChoice | undefined = parseChoice(typed, items);
    if (!choice) {
      why = `'${typed}' is not one of the choices below.`;
      continue;
    }
    try {
      switch (choice.kind) {
        case 'look':
          return 'look';
        case 'shell':
          return 'shell';
        case 'iso':
          await o.bootIso({ target: choice.url, ...(choice.sha256 ? { sha256: choice.sha256 } : {}), ...(choice.sums ? { sums: choice.sums } : {}) });
          break;
        case 'url': {
          const url = await ask(o, 'URL of the ISO (https://…, or http://… with its SHA-256):', ctx.signal);
          const sha = await ask(o, 'Its SHA-256 (64 hex digits; empty for none, https only):', ctx.signal);
          await o.bootIso({ target: url, sha256: sha ? sha.toLowerCase() : undefined });
          break;
        }
        case 'usb': {
          const files = await isosOnDisks(o.runner);
          if (files.length === 0) throw new StiefelError('E_ISO_NONE', 'no .iso file on any disk (looked in the top directory and one below, read-only)');
          o.print(['ISO files found:', ...files.map((f, i) => `  ${String(i + 1).padStart(2)}  ${f}`), ''].join('\n'));
          const n = Number(await ask(o, `Which (1-${files.length})?`, ctx.signal));
          const file = files[n - 1];
          if (!file) throw new StiefelError('E_ISO_NONE', 'no such file in the list');
          await o.bootIso({ target: file });
          break;
        }
      }
      // bootIso returned without booting (written out elsewhere): show the menu again.
      why = 'The ISO did not start.';
    } catch (err) {
      if (ctx.signal.aborted) throw err;
      // Whole in the log (a long line wraps on the console); the menu's heading points at it.
      ctx.log.warn(`not booted: ${(err as Error).message}`);
      why = 'That did not boot (the reason is just above). What now?';
    }
  }
}

/** Unmounts what isosOnDisks mounted (best effort). */
export async function unmountDisks(runner: CommandRunner, mountRoot = '/run/stiefel-media'): Promise<void> {
  for (const name of await fs.readdir(mountRoot).catch(() => [] as string[])) {
    await runChecked(runner, 'E_UMOUNT', 'umount', [posix.join(mountRoot, name)]).catch(() => undefined);
  }
}
