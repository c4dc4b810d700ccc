import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const serverCommand: Command = {
  name: 'server',
  summary: 'serve the disk, the boot payload and discovery (stiefelOS server role)',
  help: `Usage: stiefelctl server\n\nNot implemented yet (issue 3).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl server is not implemented yet (issue 3)');
  },
};
