import { hostname, tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { configPath, loadConfig, parseConfigText, DEFAULT_CONFIG_PATH } from '../config';
import { parsePairTarget } from '../desktop/pairing-client';
import { readSecretFile } from '../crypto/secret-file';
import { detectHandOff, kexecTools } from '../kexec/kexec';
import { access, readFile } from 'node:fs/promises';
import { systemNetworkControl } from '../netif/interfaces';
import { runBootClient } from '../desktop/client-role';
import { ProgressReporter } from '../progress';
import { terminalAnswerer } from '../desktop/terminal-answerer';
import { noLaptopMenu } from '../desktop/no-laptop';
import { watchForKey } from '../desktop/key-watch';
import { runIsoBoot, runningConsoles } from '../desktop/iso-source';
import { pendingIsoBoot } from '../iso/pmem';
import { systemRunner } from '../disk/runner';
import { StiefelError, UsageError } from '../errors';

/** stiefelOS's /init marks the image it runs in. */
const STIEFELOS_RELEASE = '/etc/stiefelos/release';
/** Where the person at the desktop types: this terminal, else stiefelOS's console. */
const CONSOLES = ['/dev/tty', '/dev/console'];

const pathExists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

export const clientCommand: Command = {
  name: 'client',
  summary: 'discover the server, fetch and verify the payload, kexec it',
  help: `Usage: stiefelctl client [--config PATH] [--pair ADDR] [--no-kexec --out DIR]

The desktop's side. Brings every network interface up, asks for the laptop on
all of them at once, downloads the laptop OS's kernel and initrd over HTTPS
with TLS-PSK, checks them against the signed manifest, appends this boot's
link settings (and keys) to the initrd as a cpio, and kexecs the laptop OS.
Questions from the laptop (a passphrase for an encrypted /boot) are asked on
this terminal. In stiefelOS the laptop OS starts at once (kexec -e); on a
desktop running its own Linux under systemd, through a clean shutdown
(systemctl kexec: every service stopped, file systems unmounted first).

Options:
  --config PATH   config file (default $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH})
  --pair ADDR     no shared secret here: pair with the laptop at ADDR
                  ([fe80::…]:PORT, what its iPXE script puts on the kernel's
                  command line as stiefel.pair=) using the code its console
                  shows; the config may then be missing (defaults apply)
  --no-kexec      do not kexec; needs --out
  --out DIR       write vmlinuz, initrd.img and cmdline to DIR (created if
                  missing); nothing is written unless the payload verified

Examples:
  stiefelctl client
  stiefelctl client --no-kexec --out /tmp/laptop-os
  stiefelctl client --pair '[fe80::5054:ff:fe12:3401]:4680'
`,
  async run(argv, ctx) {
    const { values } = parseCommandArgs(
      'client',
      argv,
      { config: { type: 'string' }, 'no-kexec': { type: 'boolean' }, out: { type: 'string' }, pair: { type: 'string' } },
      { min: 0, max: 0, names: '' },
    );
    if (values.out !== undefined && !values['no-kexec']) throw new UsageError('--out DIR needs --no-kexec', { command: 'client' });
    if (values['no-kexec'] && values.out === undefined) throw new UsageError('--no-kexec needs --out DIR (where to write the files)', { command: 'client' });
    if (values.out === '') throw new UsageError('--out needs a directory', { command: 'client' });
    const file = configPath(values.config, ctx.env, ctx.cwd);
    const pair = values.pair;
    if (pair !== undefined && parsePairTarget(pair) === undefined) throw new UsageError(`--pair ${pair} is not [fe80::…]:PORT`, { command: 'client' });
    // A PXE-booted stiefelOS carries no config and no secret: it pairs.
    const config = pair !== undefined && !(await pathExists(file)) ? parseConfigText('', file) : await loadConfig(file);
    const secret = pair === undefined ? await readSecretFile(config.secret) : undefined;
    const progress = { reporter: undefined as ProgressReporter | undefined };
    const answerer = terminalAnswerer();
    // The stick's stiefelOS shows a menu when no laptop answers for a while (not a PXE-booted one: it found its laptop already).
    const menuAfterMs = pair === undefined && (await pathExists(STIEFELOS_RELEASE)) ? config.client.menuAfterS * 1000 : 0;
    // A stiefelOS restarted to keep a live ISO in RAM (iso boot by URL) goes on with that first.
    let menuFirst: string | undefined;
    const pending = menuAfterMs ? pendingIsoBoot(await readFile('/proc/cmdline', 'utf8').catch(() => '')) : undefined;
    if (pending) {
      try {
        await runIsoBoot(
          { target: pending.url, ...(pending.sha256 ? { sha256: pending.sha256 } : {}), entry: pending.entry, pmem: pending.region, cwd: ctx.cwd, consoles: await runningConsoles(), isTTY: ctx.isTTY, network: { interfaces: config.network.interfaces, exclude: config.network.exclude } },
          { log: ctx.log.child('iso'), signal: ctx.signal },
        );
      } catch (err) {
        if (ctx.signal.aborted) throw err;
        ctx.log.warn(`not booted: ${(err as Error).message}`);
        menuFirst = 'That did not boot (the reason is above; its RAM stays set aside). What now?';
      }
    }
    for (;;) {
      // A key pressed while it looks opens the menu at once.
      const menuKey = new AbortController();
      const keys = menuAfterMs ? watchForKey(CONSOLES, () => menuKey.abort(new StiefelError('E_MENU', 'a key was pressed'))) : undefined;
      if (keys) ctx.log.info(`press a key for the menu (it comes by itself after ${config.client.menuAfterS} s without a laptop)`);
      try {
        if (menuFirst !== undefined) throw new StiefelError('E_MENU', menuFirst);
        await runBootClient(
          {
            config,
            secret,
            pair,
            discoveryTimeoutMs: menuAfterMs || undefined,
            discoverySignal: menuKey.signal,
            onFound: () => keys?.stop(),
            outDir: values.out === undefined ? undefined : resolve(ctx.cwd, values.out),
            kexec: kexecTools({ handOff: await detectHandOff(pathExists), missingFix: '; or use --no-kexec --out DIR' }),
            workDir: tmpdir(),
            net: systemNetworkControl(),
            clientName: hostname(),
            answerer,
            onProgress: ({ received, total }) => {
              progress.reporter ??= new ProgressReporter({ write: (line) => ctx.log.info(line), tty: ctx.isTTY, label: 'downloading' });
              progress.reporter.update(received, total);
            },
          },
          { log: ctx.log, signal: ctx.signal },
        );
        return;
      } catch (err) {
        const keyed = menuKey.signal.aborted && !ctx.signal.aborted;
        if (menuFirst === undefined && !keyed && !(menuAfterMs && err instanceof StiefelError && err.code === 'E_DISCOVERY_TIMEOUT')) throw err;
      } finally {
        keys?.stop();
      }
      const outcome = await noLaptopMenu(
        {
          why: menuFirst ?? (menuKey.signal.aborted ? 'The menu, as asked (a key was pressed). What now?' : `No laptop answered within ${config.client.menuAfterS} s. What now?`),
          isos: config.client.isos,
          answerer,
          print: (text) => process.stderr.write(`${text}\n`),
          bootIso: async (r) => {
            await runIsoBoot(
              { ...r, cwd: ctx.cwd, consoles: await runningConsoles(), isTTY: ctx.isTTY, network: { interfaces: config.network.interfaces, exclude: config.network.exclude } },
              { log: ctx.log.child('iso'), signal: ctx.signal },
            );
          },
          runner: systemRunner,
        },
        { log: ctx.log, signal: ctx.signal },
      );
      menuFirst = undefined;
      if (outcome === 'shell') {
        ctx.log.info('to the rescue shell, as asked');
        return;
      }
      ctx.log.info('looking for the laptop again');
    }
  },
};
