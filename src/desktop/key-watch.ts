// "Press a key for the menu" while the stick's stiefelOS looks for the
// laptop: the console in raw mode, the first key pressed calls back. Stopped
// (the console as it was) before anything else reads the console.
import { closeSync, openSync } from 'node:fs';
import { ReadStream } from 'node:tty';

export interface KeyWatch {
  stop(): void;
}

/** Watches the first of `devices` that opens; without one, nothing is watched. */
export function watchForKey(devices: readonly string[], onKey: () => void): KeyWatch {
  let fd: number | undefined;
  for (const d of devices) {
    try {
      fd = openSync(d, 'r');
      break;
    } catch {
      // the next one
    }
  }
  if (fd === undefined) return { stop: () => undefined };
  let input: ReadStream;
  try {
    input = new ReadStream(fd);
    input.setRawMode(true);
  } catch {
    closeSync(fd);
    return { stop: () => undefined };
  }
  let stopped = false;
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    input.off('data', onData);
    try {
      input.setRawMode(false);
    } catch {
      // the console went away
    }
    input.destroy();
  };
  const onData = (): void => {
    stop();
    onKey();
  };
  input.on('data', onData);
  return { stop };
}
