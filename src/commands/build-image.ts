import type { Command } from '../cli/command';
import { StiefelError } from '../errors';

export const buildImageCommand: Command = {
  name: 'build-image',
  summary: 'build stiefelOS (vmlinuz, initrd.img)',
  help: `Usage: stiefelctl build-image\n\nNot implemented yet (issue 5).\n`,
  async run() {
    throw new StiefelError('E_NOT_IMPLEMENTED', 'stiefelctl build-image is not implemented yet (issue 5)');
  },
};
