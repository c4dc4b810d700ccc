import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const nbdServeCommand: Command = {
  name: 'nbd-serve',
  summary: 'serve one file or block device over NBD until stopped',
  help: `Usage: stiefelctl nbd-serve\n\nNot implemented yet (issue 2).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl nbd-serve is not implemented yet (issue 2)');
  },
};
