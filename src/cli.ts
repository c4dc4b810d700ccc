import { runFromProcess } from './cli/process';

runFromProcess();
