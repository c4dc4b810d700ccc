import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const bootEntriesCommand: Command = {
  name: 'boot-entries',
  summary: 'list the boot entries found on a /boot, partition, disk or image',
  help: `Usage: stiefelctl boot-entries\n\nNot implemented yet (issue 4).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl boot-entries is not implemented yet (issue 4)');
  },
};
