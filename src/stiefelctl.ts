// The entry point of dist/stiefelctl.js: the CLI with every command, or,
// forked by `nbd-serve --workers` with its variable set, an NBD worker process.
import { runFromProcess, runWorkerIfAsked } from './cli/process';
import { COMMANDS } from './commands';
import { NBD_WORKER_ENV, runNbdWorker } from './nbd/worker-process';

if (!runWorkerIfAsked(NBD_WORKER_ENV, runNbdWorker)) runFromProcess(COMMANDS);
