import { access, readFile } from 'node:fs/promises';
import { parseCommandArgs, type Command } from '../cli/command';
import { configPath, loadConfig, DEFAULT_CONFIG_PATH } from '../config';
import { readSecretFile } from '../crypto/secret-file';
import { systemRunner } from '../disk/runner';
import { StiefelError } from '../errors';
import { detectHandOff, kexecTools } from '../kexec/kexec';
import { requestCancel, startAutokexec } from '../laptop/autokexec';
import { systemNotifier } from '../laptop/notify';
import { systemNetworkControl } from '../netif/interfaces';

const pathExists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

export const autokexecCommand: Command = {
  name: 'autokexec',
  summary: "the laptop's trigger: reboot into stiefelOS when a desktop asks (a systemd service)",
  help: `Usage: stiefelctl autokexec [--config PATH]
       stiefelctl autokexec --cancel

Runs in the laptop's own OS as the stiefel-autokexec service (setup-server-os
enables it). Listens on every network interface, including ones plugged in
later, for a desktop's authenticated discovery request (autokexec.trigger:
discovery), or watches the carrier of the interface autokexec.link_mac (link;
both: either). On a trigger it loads stiefelOS (autokexec.image, built by
setup-server-os) with kexec, tells the logged-in users (wall, and a desktop
notification in graphical sessions), counts down autokexec.delay_s seconds
and reboots into it through systemd's clean shutdown (systemctl kexec).
Forged, replayed and stale requests never trigger, and say so in the journal.

Options:
  --config PATH   config file (default $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH})
  --cancel        cancel the countdown of the running service; then triggers
                  are ignored for autokexec.holdoff_s seconds

Examples:
  systemctl enable --now stiefel-autokexec
  stiefelctl autokexec --cancel
`,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('autokexec', argv, { config: { type: 'string' }, cancel: { type: 'boolean' } }, { min: 0, max: 0, names: '' });
    if (values.cancel) {
      ctx.stdout(`${await requestCancel()}\n`);
      return;
    }
    const config = await loadConfig(configPath(values.config, ctx.env, ctx.cwd));
    const secret = await readSecretFile(config.secret);
    if ((await detectHandOff(pathExists)) !== 'systemctl') {
      throw new StiefelError('E_AUTOKEXEC_SYSTEMD', 'autokexec reboots through systemd\u2019s clean shutdown, and systemd does not run this machine: start the stiefelOS server role another way (its boot-menu entry)');
    }
    const runningCmdline = (await readFile('/proc/cmdline', 'utf8')).trim();
    const auto = startAutokexec(
      {
        config,
        secret,
        kexec: kexecTools({ handOff: 'systemctl' }),
        notify: systemNotifier(systemRunner, ctx.log.child('notify')),
        net: systemNetworkControl(),
        runningCmdline,
      },
      { log: ctx.log, signal: ctx.signal },
    );
    await auto.ready;
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) return resolve();
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await auto.close();
  },
};
