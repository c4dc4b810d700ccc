import { hostname } from 'node:os';
import { parseCommandArgs, type Command } from '../cli/command';
import { configPath, loadConfig, DEFAULT_CONFIG_PATH } from '../config';
import { readSecretFile } from '../crypto/secret-file';
import { systemNetworkControl } from '../netif/interfaces';
import { startBootServer } from '../laptop/server-role';
import { startNbdDiskService } from '../laptop/nbd-disk';
import { consolePassphraseProvider } from '../disk/passphrase-console';

export const serverCommand: Command = {
  name: 'server',
  summary: 'serve the disk, the boot payload and discovery (stiefelOS server role)',
  help: `Usage: stiefelctl server [--config PATH]

The laptop's side. Brings every network interface up (and ones that appear
later), answers discovery (UDP 61570), serves the boot payload named in
server.boot over HTTPS with TLS-PSK (port 4644) and the disk server.disk over
NBD, to one desktop at a time. Runs until interrupted. A LUKS passphrase for
the laptop's /boot is asked on the desktop and, when this runs on a terminal
(the laptop's console in stiefelOS), here too: the first answer wins.

Options:
  --config PATH   config file (default $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH})

Example:
  stiefelctl server --config /etc/stiefelsystem/config.yaml
`,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('server', argv, { config: { type: 'string' } }, { min: 0, max: 0, names: '' });
    const config = await loadConfig(configPath(values.config, ctx.env, ctx.cwd));
    const secret = await readSecretFile(config.secret);
    if (ctx.signal.aborted) return;
    // The laptop's console (stiefelOS runs us on it, without a controlling
    // terminal, hence stderr's device) answers a LUKS passphrase too, should
    // the desktop not: whichever is typed first wins.
    const consolePassphrase = ctx.isTTY ? consolePassphraseProvider({ ttyPath: '/proc/self/fd/2' }) : undefined;
    const server = await startBootServer(
      { config, secret, serverName: config.server.name ?? hostname(), net: systemNetworkControl(), startDisk: startNbdDiskService, ...(consolePassphrase ? { consolePassphrase } : {}) },
      { log: ctx.log, signal: ctx.signal },
    );
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await server.close();
    ctx.log.info('stopped');
  },
};
