// libuv sizes its thread pool (file I/O) once, at first use: the NBD server
// keeps many reads and writes in flight, so give it more than the default 4
// unless the user chose. This is the entry point, the only place allowed to.
process.env.UV_THREADPOOL_SIZE ??= '16';

// eslint-disable-next-line import/first
import { runFromProcess } from './cli/process';

runFromProcess();
