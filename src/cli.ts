import { runFromProcess } from './cli/process';
import { COMMANDS } from './commands';

runFromProcess(COMMANDS);
