import { hostname } from 'node:os';
import { parseCommandArgs, type Command } from '../cli/command';
import { configPath, loadConfig, DEFAULT_CONFIG_PATH } from '../config';
import { readSecretFile } from '../crypto/secret-file';
import { systemNetworkControl } from '../netif/interfaces';
import { startBootServer } from '../laptop/server-role';
import { startNbdDiskService } from '../laptop/nbd-disk';
import { consolePassphraseProvider } from '../disk/passphrase-console';
import { access, appendFile } from 'node:fs/promises';
import { consoleBeeper, findPcSpeaker } from '../laptop/battery';
import { IMAGE_PATHS } from '../image/build';
import { terminalKeys } from '../laptop/console-keys';
import { consoleIsVirtualTerminal, openConsolePanel } from '../laptop/console-panel';

export const serverCommand: Command = {
  name: 'server',
  summary: 'serve the disk, the boot payload and discovery (stiefelOS server role)',
  help: `Usage: stiefelctl server [--config PATH]

The laptop's side. Brings every network interface up (and ones that appear
later), answers discovery (UDP 61570), serves the boot payload named in
server.boot over HTTPS with TLS-PSK (port 4644) and the disk server.disk over
NBD, to one desktop at a time. Runs until interrupted. In stiefelOS, when
the desktop says goodbye as it shuts down and the disk was left clean, it
returns to the laptop's own OS (server.when_done: return, stay, poweroff)
after a countdown any key cancels; a desktop that vanishes without a
goodbye is reported and waited for (R returns anyway). A LUKS passphrase for
the laptop's /boot is asked on the desktop and, when this runs on a terminal
(the laptop's console in stiefelOS), here too: the first answer wins.
On a virtual-terminal console (server.console_panel: auto; on: any terminal)
the top rows show what 'stiefelctl status' shows, redrawn once a second, and
the log scrolls beneath them.

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
    // The way back to the laptop's own OS replaces the running kernel: only
    // in stiefelOS, never on a machine where `stiefelctl server` runs beside its own OS.
    const inStiefelOs = await access(IMAGE_PATHS.release).then(() => true, () => false);
    if (!inStiefelOs) ctx.log.info(`not in stiefelOS: when the desktop is done, this stays as it is (server.when_done applies in stiefelOS)`);
    // The status panel on the laptop's console (its own fd on stderr's device, like the passphrase prompt).
    const mode = config.server.consolePanel;
    const panel = mode !== 'off' && ctx.isTTY && (mode === 'on' || (await consoleIsVirtualTerminal('/proc/self/fd/2'))) ? openConsolePanel('/proc/self/fd/2') : undefined;
    const serverName = config.server.name ?? hostname();
    // Drawn before the first log line, so that every line goes beneath it.
    panel?.draw([`stiefelsystem: '${serverName}' starting`]);
    try {
      const server = await startBootServer(
        {
          config,
          secret,
          serverName,
          net: systemNetworkControl(config.link.mtu !== 1500 ? { mtu: config.link.mtu, warn: (m) => ctx.log.warn(m) } : {}),
          startDisk: startNbdDiskService,
          ...(consolePassphrase ? { consolePassphrase } : {}),
          ...(panel ? { panel } : {}),
          ...(inStiefelOs ? { wayBack: { console: terminalKeys({ ttyPath: '/proc/self/fd/2' }) } } : {}),
          // The bell goes to where the log goes (the console in stiefelOS); the PC speaker only there.
          beeper: consoleBeeper({
            bell: (bel) => void appendFile('/proc/self/fd/2', bel).catch(() => undefined),
            ...(inStiefelOs ? { speaker: () => findPcSpeaker() } : {}),
          }),
        },
        { log: ctx.log, signal: ctx.signal },
      );
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) return resolve();
        ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      });
      await server.close();
    } finally {
      // Also when the server could not start: the console gets its whole screen back.
      panel?.close();
    }
    ctx.log.info('stopped');
  },
};
