// Every stiefelctl command, in the order --help lists them. One file each.
import type { Command } from './command';
import { nbdServeCommand } from '../commands/nbd-serve';
import { initCommand } from '../commands/init';
import { serverCommand } from '../commands/server';
import { clientCommand } from '../commands/client';
import { bootEntriesCommand } from '../commands/boot-entries';
import { buildImageCommand } from '../commands/build-image';
import { setupServerOsCommand } from '../commands/setup-server-os';
import { createUsbdriveCommand } from '../commands/create-usbdrive';
import { selftestCommand } from '../commands/selftest';

export const COMMANDS: readonly Command[] = [
  nbdServeCommand,
  initCommand,
  serverCommand,
  clientCommand,
  bootEntriesCommand,
  buildImageCommand,
  setupServerOsCommand,
  createUsbdriveCommand,
  selftestCommand,
];
