import { parseCommandArgs, type Command } from '../cli/command';
import { configPath, loadConfig, DEFAULT_CONFIG_PATH } from '../config';
import { systemRunner } from '../disk/runner';
import { UsageError } from '../errors';
import { GOODBYE_CONF, runLaptopWatch } from '../laptop/laptop-watch';
import { systemNotifier } from '../laptop/notify';

const help = `Usage: stiefelctl laptop-watch [--every S] [--silent-after S] [--console DEV]
                             [--config PATH] [--conf PATH]

Runs in the laptop OS while it runs on the desktop (the stiefel-laptop-watch
service, which starts only there: its initramfs wrote ${GOODBYE_CONF}).
Asks the laptop every few seconds what it serves, through the tunnel with this
boot's token, and tells the person at the desktop, on the console and with
wall and desktop notifications:
  - the laptop runs on battery (every server.battery.warn_every_s seconds,
    every low_every_s below low_percent), and when it is on mains again;
  - the laptop has not answered for a while (the cable is out or the laptop is
    off: the disk hangs until it is back), and when it answers again;
  - the laptop no longer serves this desktop.
While the laptop is silent only the console hears it: wall and notify-send
live on the disk that hangs, and follow when it answers.

Options:
  --every S          ask this often (default 5)
  --silent-after S   say the laptop is silent after this long (default 30)
  --console DEV      where the lines are written (default /dev/console)
  --config PATH      config file, for the battery thresholds (default
                     $STIEFEL_CONFIG, else ${DEFAULT_CONFIG_PATH})
  --conf PATH        the laptop's address and token (default ${GOODBYE_CONF})
`;

function seconds(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || n < 1 || n > 3600) throw new UsageError(`--${name} takes seconds from 1 to 3600, not '${text}'`, { command: 'laptop-watch' });
  return n;
}

export const laptopWatchCommand: Command = {
  name: 'laptop-watch',
  summary: "in the laptop OS on the desktop: say when the laptop runs on battery or stops answering",
  help,
  async run(argv, ctx) {
    const { values } = parseCommandArgs(
      'laptop-watch',
      argv,
      { every: { type: 'string' }, 'silent-after': { type: 'string' }, console: { type: 'string' }, config: { type: 'string' }, conf: { type: 'string' } },
      { min: 0, max: 0, names: '' },
    );
    const every = seconds('every', values.every, 5);
    const silentAfter = seconds('silent-after', values['silent-after'], 30);
    const config = await loadConfig(configPath(values.config, ctx.env, ctx.cwd));
    const b = config.server.battery;
    await runLaptopWatch(
      {
        conf: values.conf ?? GOODBYE_CONF,
        rules: { warnEveryS: b.warnEveryS, lowPercent: b.lowPercent, lowEveryS: b.lowEveryS, silentAfterMs: silentAfter * 1000, silentRepeatMs: 120_000 },
        everyMs: every * 1000,
        console: values.console ?? '/dev/console',
        notifier: systemNotifier(systemRunner, ctx.log.child('notify')),
      },
      { log: ctx.log, signal: ctx.signal },
    );
  },
};
