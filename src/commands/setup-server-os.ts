import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const setupServerOsCommand: Command = {
  name: 'setup-server-os',
  summary: 'install the network-root hooks into the laptop OS',
  help: `Usage: stiefelctl setup-server-os\n\nNot implemented yet (issue 6).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl setup-server-os is not implemented yet (issue 6)');
  },
};
