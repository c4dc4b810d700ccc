// The laptop's way back to its own OS when the desktop is done with the
// disk. "Done" is something the desktop says (its goodbye, the last step of
// its shutdown), never something the laptop guesses: a pulled cable looks
// like a desktop that powered off, and that desktop may still have the disk
// mounted. So:
//   goodbye    -> stop serving the disk, check that its file systems were left
//                 clean, then server.when_done: return (after a countdown any
//                 key cancels), stay, or poweroff;
//   vanished   -> the disk connection ended without a goodbye: wait a while
//                 for the desktop to connect again (its stiefel-nbd-reconnect
//                 replaces a connection its kernel gave up, after a pulled
//                 cable); then say so, name the risk, and wait: for the
//                 desktop to come back, or for a person to press R to return
//                 anyway.
// Returning kexecs the laptop OS's own kernel and initrd (the entry the
// desktop booted) with its own command line; a laptop whose LUKS key is
// sealed in the TPM returns through its firmware instead (a reboot), since
// the TPM would not unseal after a kexec.
import type { Logger } from '../log';
import type { DiskHealth } from '../disk/clean-check';
import type { KexecImage } from '../kexec/kexec';

export type WhenDone = 'return' | 'stay' | 'poweroff';

/** Keys typed on the laptop's console (what is said goes to the log, which stiefelOS shows there). */
export interface ConsoleIO {
  /** The next key typed within `ms` (undefined: none, or no console); aborted with the signal. */
  key(ms: number, signal: AbortSignal): Promise<string | undefined>;
}

export interface WayBackActions {
  /** Stops serving the disk (closes every NBD connection) and flushes it. */
  stopDisk(): Promise<void>;
  /** The state of the disk's file systems. */
  health(): Promise<DiskHealth>;
  /** The laptop OS's own kernel, initrd and command line. */
  ownOs(): Promise<KexecImage>;
  kexec(image: KexecImage): Promise<void>;
  reboot(): Promise<void>;
  poweroff(): Promise<void>;
}

export interface WayBackOptions {
  whenDone: WhenDone;
  delayS: number;
  /** How long a desktop that lost its connection has to connect again before the console offers R; 20 s when omitted. */
  reconnectGraceMs?: number;
  console: ConsoleIO;
  actions: WayBackActions;
  log: Logger;
  signal: AbortSignal;
}

export interface WayBack {
  /** The desktop said goodbye: `verb` is how it shuts down. */
  goodbye(host: string, verb: string): Promise<void>;
  /**
   * The desktop's disk connection ended without a goodbye; `detached`: it
   * said NBD_CMD_DISC (it let the disk go, and will not connect again by itself).
   */
  vanished(host: string, detached?: boolean): Promise<void>;
  /** The desktop is back (a new disk connection): a pending wait ends. */
  returned(): void;
}

function describeHealth(h: DiskHealth): string {
  const parts = [
    ...(h.clean.length ? [`clean: partition${h.clean.length > 1 ? 's' : ''} ${h.clean.join(', ')}`] : []),
    ...h.unchecked.map((u) => `partition ${u.partition} (${u.kind}) not checked here`),
  ];
  return parts.join('; ') || 'no file system found';
}

export function createWayBack(o: WayBackOptions): WayBack {
  const { console: io, actions, log } = o;
  let waiting: AbortController | undefined;
  /** Ends the wait for a desktop that lost its connection to connect again. */
  let graceWaiting: (() => void) | undefined;
  let busy = false;

  const say = (line: string): void => log.info(line);

  /** Counts down; true when it ran out, false when a key was pressed. */
  const countdown = async (what: string): Promise<boolean> => {
    say(`${what} in ${o.delayS} s; press any key on this console to stay in stiefelOS`);
    const key = o.delayS > 0 ? await io.key(o.delayS * 1000, o.signal) : undefined;
    if (key !== undefined) {
      say('staying in stiefelOS (a key was pressed); the disk is not served any more: restart the laptop to use it');
      return false;
    }
    return !o.signal.aborted;
  };

  const returnToOwnOs = async (): Promise<void> => {
    const h = await actions.health();
    if (h.tpmSealed) {
      say("this laptop's disk key is sealed in its TPM, which would not unseal it after a kexec: returning through the firmware (a reboot)");
      await actions.reboot();
      return;
    }
    const image = await actions.ownOs();
    say(`starting the laptop's own OS (${image.kernel})`);
    await actions.kexec(image);
  };

  /** Waits up to `ms` for the desktop to connect again (returned()), unless the server stops first. */
  const waitForReturn = (ms: number): Promise<'returned' | 'timeout' | 'stopped'> =>
    new Promise((resolve) => {
      if (o.signal.aborted) return resolve('stopped');
      const end = (how: 'returned' | 'timeout' | 'stopped'): void => {
        clearTimeout(timer);
        o.signal.removeEventListener('abort', onAbort);
        graceWaiting = undefined;
        resolve(how);
      };
      const onAbort = (): void => end('stopped');
      const timer = setTimeout(() => end('timeout'), ms);
      o.signal.addEventListener('abort', onAbort, { once: true });
      graceWaiting = () => end('returned');
    });

  /** Waits for R (return anyway) while the desktop may come back; true when R was pressed. */
  const waitForPerson = async (): Promise<boolean> => {
    // Either the desktop coming back or the server stopping ends the wait
    // (no AbortSignal.any: Node 18, Debian 12's, lacks it).
    const local = new AbortController();
    waiting = local;
    const onOuter = (): void => local.abort();
    o.signal.addEventListener('abort', onOuter, { once: true });
    const stop = local.signal;
    try {
      for (;;) {
        const key = await io.key(60 * 60 * 1000, stop);
        if (stop.aborted) return false;
        if (key && /^[rR]$/.test(key)) return true;
      }
    } finally {
      waiting = undefined;
      o.signal.removeEventListener('abort', onOuter);
    }
  };

  return {
    async goodbye(host, verb) {
      if (busy) return;
      busy = true;
      try {
        say(`the desktop at ${host} said goodbye (it does ${verb}): its last writes are on this disk`);
        await actions.stopDisk();
        const h = await actions.health();
        if (h.dirty.length) {
          const what = h.dirty.map((d) => `partition ${d.partition} ${d.state === 'errors' ? 'has recorded errors' : 'needs journal recovery'}`).join(', ');
          say(`the disk's file systems were not left clean (${what}): not returning by itself. Press R to return to the laptop's own OS anyway (it replays the journal), or restart the laptop.`);
          if (await waitForPerson()) await returnToOwnOs();
          return;
        }
        say(`the disk was left clean (${describeHealth(h)})`);
        if (o.whenDone === 'stay') {
          say('staying in stiefelOS (server.when_done: stay); restart the laptop to use its own OS');
          return;
        }
        if (o.whenDone === 'poweroff') {
          if (await countdown('powering off')) await actions.poweroff();
          return;
        }
        if (await countdown("returning to the laptop's own OS")) await returnToOwnOs();
      } finally {
        busy = false;
      }
    },
    async vanished(host, detached = false) {
      if (busy) return;
      busy = true;
      try {
        if (!detached) {
          const graceMs = o.reconnectGraceMs ?? 20_000;
          const lostAt = Date.now();
          say(`the desktop at ${host} lost its disk connection without a goodbye; the disk stays held for it: waiting ${Math.round(graceMs / 1000)} s for it to connect again`);
          const grace = await waitForReturn(graceMs);
          if (grace === 'returned') {
            say(`the desktop at ${host} is back on the disk after ${Math.round((Date.now() - lostAt) / 1000)} s (a new connection)`);
            return;
          }
          if (grace === 'stopped') return;
        }
        say(
          `the desktop at ${host} left the disk without saying goodbye (a crash, a power cut, or the cable): it may still have the disk mounted, so this laptop does not return to its own OS by itself. ` +
            "Waiting for the desktop to come back; press R to return anyway once you are sure it is off (its last writes may be lost, the journal replays).",
        );
        if (await waitForPerson()) {
          await actions.stopDisk();
          await returnToOwnOs();
        }
      } finally {
        busy = false;
      }
    },
    returned() {
      if (graceWaiting) {
        graceWaiting();
      } else if (waiting) {
        say('the desktop is back on the disk');
        waiting.abort();
      }
    },
  };
}
