// Every stiefelctl command, in the order --help lists them. One file each;
// src/stiefelctl.ts hands this list to the CLI, which knows no command by name.
import type { Command } from '../cli/command';
import { nbdServeCommand } from './nbd-serve';
import { initCommand } from './init';
import { serverCommand } from './server';
import { clientCommand } from './client';
import { bootEntriesCommand } from './boot-entries';
import { buildImageCommand } from './build-image';
import { setupServerOsCommand } from './setup-server-os';
import { selftestCommand } from './selftest';
import { autokexecCommand } from './autokexec';
import { createUsbdriveCommand } from './create-usbdrive';
import { isoCommand } from './iso';
import { statusCommand } from './status';
import { laptopWatchCommand } from './laptop-watch';

export const COMMANDS: readonly Command[] = [
  nbdServeCommand,
  initCommand,
  serverCommand,
  clientCommand,
  bootEntriesCommand,
  buildImageCommand,
  setupServerOsCommand,
  autokexecCommand,
  createUsbdriveCommand,
  statusCommand,
  laptopWatchCommand,
  isoCommand,
  selftestCommand,
];
