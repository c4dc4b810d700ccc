// The entry point of dist/stiefelctl.js: the CLI with every command.
import { runFromProcess } from './cli/process';
import { COMMANDS } from './commands';

runFromProcess(COMMANDS);
