// The laptop is a battery-powered server: while it serves on battery,
// stiefelOS says so on its console and beeps, every minute, and every 10 s
// when the charge runs low (both configurable). Read from the kernel's
// power_supply class (/sys/class/power_supply/NAME/{type,online,capacity,
// status}); beeps are the console's bell and, where the kernel has the PC
// speaker (pcspkr), a short tone through its input device.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log';

export interface PowerState {
  /** True when no mains adapter is online but a battery is there. */
  onBattery: boolean;
  /** Charge of the batteries (the lowest one), in percent, when known. */
  capacity: number | undefined;
  /** The batteries' names, for the message. */
  batteries: string[];
}

/** One power supply as sysfs shows it: the files' contents, trimmed. */
export interface SupplyFiles {
  name: string;
  type?: string;
  online?: string;
  capacity?: string;
  status?: string;
}

/** Pure: what a set of power supplies says. No battery: never on battery (a desktop PC, a VM). */
export function powerState(supplies: readonly SupplyFiles[]): PowerState {
  const batteries = supplies.filter((s) => s.type === 'Battery');
  const mains = supplies.filter((s) => s.type === 'Mains' || s.type === 'USB' || s.type === 'USB_PD');
  const mainsOnline = mains.some((s) => s.online === '1');
  const discharging = batteries.some((s) => s.status === 'Discharging');
  const capacities = batteries.map((s) => Number(s.capacity)).filter((c) => Number.isFinite(c) && c >= 0 && c <= 100);
  return {
    onBattery: batteries.length > 0 && (mains.length > 0 ? !mainsOnline : discharging),
    capacity: capacities.length > 0 ? Math.min(...capacities) : undefined,
    batteries: batteries.map((s) => s.name),
  };
}

/** Reads every supply under `root` (a sysfs power_supply directory, or a test's copy of one). */
export async function readPowerSupplies(root: string): Promise<SupplyFiles[]> {
  const names = await fs.readdir(root).catch(() => [] as string[]);
  const read = (name: string, file: string): Promise<string | undefined> =>
    fs.readFile(join(root, name, file), 'utf8').then(
      (t) => t.trim(),
      () => undefined,
    );
  return Promise.all(
    names.sort().map(async (name) => ({
      name,
      type: await read(name, 'type'),
      online: await read(name, 'online'),
      capacity: await read(name, 'capacity'),
      status: await read(name, 'status'),
    })),
  );
}

export interface BatteryWarningOptions {
  warnEveryS: number;
  lowPercent: number;
  lowEveryS: number;
}

const isLow = (state: PowerState, o: BatteryWarningOptions): boolean => state.capacity !== undefined && state.capacity < o.lowPercent;

/** Pure: how long until the next warning, or undefined on mains power. */
export function warningInterval(state: PowerState, o: BatteryWarningOptions): number | undefined {
  if (!state.onBattery) return undefined;
  return (isLow(state, o) ? o.lowEveryS : o.warnEveryS) * 1000;
}

/** The console line for a warning. */
export function warningText(state: PowerState, o: BatteryWarningOptions): string {
  const charge = state.capacity === undefined ? 'charge unknown' : `${state.capacity} % left`;
  const plug = isLow(state, o) ? 'plug it in now,' : 'plug it in;';
  return `the laptop runs on battery (${charge}): ${plug} the desktop loses its disk when the battery dies`;
}

/** An input_event (struct input_event on 64-bit Linux: timeval, type, code, value): 24 bytes. */
export function inputEvent(type: number, code: number, value: number): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(type, 16);
  b.writeUInt16LE(code, 18);
  b.writeInt32LE(value, 20);
  return b;
}

export const EV_SND = 0x12;
export const SND_TONE = 0x02;

export interface Beeper {
  beep(): Promise<void>;
}

/**
 * The console's bell (BEL on the console stream) and, when `speaker` finds
 * the PC speaker's event device, a 1 kHz tone of 150 ms through it.
 */
export function consoleBeeper(o: { bell: (text: string) => void; speaker?: () => Promise<string | undefined>; toneMs?: number }): Beeper {
  return {
    async beep() {
      o.bell('\x07');
      const device = await o.speaker?.().catch(() => undefined);
      if (!device) return;
      const fh = await fs.open(device, 'w').catch(() => undefined);
      if (!fh) return;
      try {
        await fh.write(inputEvent(EV_SND, SND_TONE, 1000));
        await new Promise((r) => setTimeout(r, o.toneMs ?? 150));
        await fh.write(inputEvent(EV_SND, SND_TONE, 0));
      } catch {
        // No speaker after all: the bell was enough.
      } finally {
        await fh.close();
      }
    },
  };
}

/**
 * The PC speaker's event device (/dev/input/eventN), found through sysfs
 * (stiefelOS has no udev to make the /dev/input/by-path link), where the
 * kernel has one.
 */
export async function findPcSpeaker(sys = '/sys', dev = '/dev'): Promise<string | undefined> {
  const inputs = join(sys, 'devices/platform/pcspkr/input');
  for (const input of await fs.readdir(inputs).catch(() => [] as string[])) {
    for (const entry of await fs.readdir(join(inputs, input)).catch(() => [] as string[])) {
      if (/^event\d+$/.test(entry)) return join(dev, 'input', entry);
    }
  }
  return undefined;
}

export interface BatteryWatchOptions extends BatteryWarningOptions {
  powerSupply: string;
  /** How often the supplies are read, in ms. */
  pollMs?: number;
  beeper: Beeper;
}

/**
 * Reads the supplies every few seconds; on battery warns (log + beep) at
 * once and then every interval; says when mains power is back.
 */
export function watchBattery(o: BatteryWatchOptions, deps: { log: Logger; signal: AbortSignal; now?: () => number }): { stop(): void; check(): Promise<void> } {
  const now = deps.now ?? Date.now;
  let nextAt: number | undefined;
  let wasOnBattery = false;
  let running: Promise<void> | undefined;
  /** One reading at a time; a call during one waits for it. */
  const check = (): Promise<void> => (running ??= read().finally(() => (running = undefined)));
  const read = async (): Promise<void> => {
    const state = powerState(await readPowerSupplies(o.powerSupply));
    const interval = warningInterval(state, o);
    if (interval === undefined) {
      if (wasOnBattery) deps.log.info('the laptop is on mains power again');
      wasOnBattery = false;
      nextAt = undefined;
      return;
    }
    wasOnBattery = true;
    const t = now();
    // A warning at once, then every interval (shorter when the charge got low).
    if (nextAt === undefined || t >= nextAt || nextAt - t > interval) {
      deps.log.warn(warningText(state, o));
      await o.beeper.beep();
      nextAt = t + interval;
    }
  };

  const timer = setInterval(() => void check().catch(() => undefined), o.pollMs ?? 2000);
  timer.unref();
  void check().catch(() => undefined);
  const stop = (): void => clearInterval(timer);
  deps.signal.addEventListener('abort', stop, { once: true });
  return { stop, check };
}
