// Telling the people logged in to the laptop's own OS: a wall message on
// every terminal, and a desktop notification in every graphical session
// (notify-send on the session's own bus, as its user), where there is one.
import type { CommandRunner } from '../disk/runner';
import type { Logger } from '../log';

export interface Notifier {
  tell(title: string, body: string, options?: { urgent?: boolean }): Promise<void>;
}

interface Session {
  id: string;
  uid: string;
  user: string;
}

/** `loginctl list-sessions --no-legend` lines: SESSION UID USER [SEAT] [TTY]. */
export function parseSessions(text: string): Session[] {
  return text
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[1]!))
    .map((f) => ({ id: f[0]!, uid: f[1]!, user: f[2]! }));
}

export function systemNotifier(runner: CommandRunner, log: Logger): Notifier {
  return {
    async tell(title, body, options = {}) {
      const wall = await runner.run('wall', [], { input: `stiefelsystem: ${title}\n${body}\n` }).catch((err: Error) => ({ code: 127, stdout: '', stderr: err.message }));
      if (wall.code !== 0) log.debug(`wall: ${wall.stderr.trim() || `exit ${wall.code}`}`);
      const list = await runner.run('loginctl', ['list-sessions', '--no-legend']).catch(() => undefined);
      for (const s of list && list.code === 0 ? parseSessions(list.stdout) : []) {
        const type = await runner.run('loginctl', ['show-session', s.id, '-p', 'Type', '--value']).catch(() => undefined);
        if (!type || !/^(x11|wayland|mir)$/.test(type.stdout.trim())) continue;
        const r = await runner
          .run('runuser', ['-u', s.user, '--', 'env', `DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/${s.uid}/bus`, 'notify-send', '-a', 'stiefelsystem', '-u', options.urgent ? 'critical' : 'normal', title, body])
          .catch((err: Error) => ({ code: 127, stdout: '', stderr: err.message }));
        if (r.code !== 0) log.debug(`notify-send for ${s.user}: ${r.stderr.trim() || `exit ${r.code}`}`);
      }
    },
  };
}
