import { fork } from 'node:child_process';
import { basename } from 'node:path';
import { parseCommandArgs, type Command } from '../cli/command';
import { UsageError } from '../errors';
import { formatBinaryBytes } from '../progress';
import {
  FileBackend,
  ListenAddressError,
  NBD_DEFAULT_PORT,
  formatListenAddress,
  nbdUri,
  parseListenAddress,
  readOnlyBackend,
  startNbdServer,
  type NbdConnectionInfo,
} from '../nbd';
import { NBD_WORKER_ENV } from '../nbd/worker-process';

const help = `Usage: stiefelctl nbd-serve FILE [--name NAME] [--listen HOST:PORT | --listen unix:PATH] [--read-only]
                            [--workers N]

Serve one regular file or block device over NBD until stopped with Ctrl-C
(SIGINT) or SIGTERM; then in-flight requests finish, the file is flushed and
the server exits cleanly.

Options:
  --name NAME        export name (default: the file's base name); clients may
                     also use the empty name
  --listen ADDRESS   where to listen (default 127.0.0.1:${NBD_DEFAULT_PORT}):
                       HOST:PORT, [IPV6]:PORT, [fe80::1%wg0]:PORT, :: (all),
                       unix:PATH
  --read-only, -r    refuse writes (clients see a read-only export)
  --workers N        serve the connections in N worker processes (1-64), so
                     that a client's several connections (nbdcopy's,
                     nbd-client -C) use several CPUs; default: none, every
                     connection in this one process
  -h, --help         show this help

Examples:
  stiefelctl nbd-serve disk.img
  stiefelctl nbd-serve /dev/sdb --read-only --listen 0.0.0.0:10809
  stiefelctl nbd-serve disk.img --listen unix:/tmp/nbd.sock --name disk
  nbdinfo nbd://127.0.0.1/disk.img        # from another terminal
  nbdinfo --map nbd://127.0.0.1/          # the empty name works too
`;

export const nbdServeCommand: Command = {
  name: 'nbd-serve',
  summary: 'serve one file or block device over NBD until stopped',
  help,
  async run(argv, ctx) {
    const { values, positionals } = parseCommandArgs(
      'nbd-serve',
      argv,
      {
        name: { type: 'string' },
        listen: { type: 'string' },
        'read-only': { type: 'boolean', short: 'r' },
        workers: { type: 'string' },
      },
      { min: 1, max: 1, names: 'FILE (the file or block device to serve)' },
    );
    const file = positionals[0]!;
    let listen;
    try {
      listen = parseListenAddress(values.listen ?? `127.0.0.1:${NBD_DEFAULT_PORT}`);
    } catch (err) {
      if (err instanceof ListenAddressError) throw new UsageError(`bad --listen: ${err.message}`, { command: 'nbd-serve' });
      throw err;
    }
    const name = values.name ?? basename(file);
    if (Buffer.byteLength(name) > 4096 || name.includes('\0')) {
      throw new UsageError('--name must be at most 4096 bytes without NUL characters', { command: 'nbd-serve' });
    }
    const readOnly = values['read-only'] ?? false;
    const workers = values.workers === undefined ? undefined : Number(values.workers);
    if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1 && workers <= 64)) {
      throw new UsageError(`--workers must be a whole number from 1 to 64, not '${values.workers}'`, { command: 'nbd-serve' });
    }
    const log = ctx.log;
    const nbdLog = log.child('nbd');
    // A disk being served must outlive whoever reads our log: when that
    // reader goes away (a closed terminal or pipe: EPIPE), lines are dropped
    // and serving goes on. Without a listener the error would end the process.
    process.stderr.on('error', () => undefined);

    const fileBackend = await FileBackend.open(file, { readOnly }, { log: nbdLog });
    const backend = readOnly ? readOnlyBackend(fileBackend) : fileBackend;
    const describe = (c: NbdConnectionInfo): string =>
      c.peer.family === 'unix' ? `client ${c.id} (unix socket)` : `client ${c.id} ${formatListenAddress({ kind: 'tcp', host: c.peer.address, port: c.peer.port })}`;
    let server;
    try {
      server = await startNbdServer(
        {
          exports: [{ name, description: `stiefelsystem: ${backend.description}`, backend, file: { path: file, readOnly } }],
          listen,
          // Each worker is this same program, forked with the variable that makes it one.
          workers: workers === undefined ? undefined : {
            count: workers,
            spawn: () => fork(process.argv[1]!, [], { env: { ...process.env, [NBD_WORKER_ENV]: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
          },
          onConnect: (c) => log.info(`${describe(c)} connected`),
          onDisconnect: (c, reason) =>
            log.info(`${describe(c)} disconnected (${reason}); read ${formatBinaryBytes(c.stats.bytesRead)}, wrote ${formatBinaryBytes(c.stats.bytesWritten)}`),
        },
        { log: nbdLog, signal: ctx.signal },
      );
    } catch (err) {
      await fileBackend.close();
      throw err;
    }
    log.info(
      `serving ${backend.description}, ${formatBinaryBytes(backend.size)}, as export '${name}' on ${formatListenAddress(server.address)}` +
        `\n  try: nbdinfo ${nbdUri(server.address, name)}\n  stop with Ctrl-C`,
    );
    await server.closed;
    const open = server.connections().length;
    if (open) log.info(`closed ${open} connection(s)`);
    try {
      if (!readOnly) await fileBackend.flush();
    } finally {
      await fileBackend.close();
    }
    log.info('stopped');
    return 0;
  },
};
