import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const clientCommand: Command = {
  name: 'client',
  summary: 'discover the server, fetch and verify the payload, kexec it',
  help: `Usage: stiefelctl client\n\nNot implemented yet (issue 3).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl client is not implemented yet (issue 3)');
  },
};
