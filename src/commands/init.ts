import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const initCommand: Command = {
  name: 'init',
  summary: 'write a commented config and a new shared secret',
  help: `Usage: stiefelctl init\n\nNot implemented yet (issue 3).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl init is not implemented yet (issue 3)');
  },
};
