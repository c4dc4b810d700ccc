import { connect } from 'node:net';
import { parseCommandArgs, type Command } from '../cli/command';
import { StiefelError } from '../errors';
import { askLaptop, GOODBYE_CONF, readLaptopAddress } from '../laptop/laptop-watch';
import { formatStatus, STATUS_SOCKET, type ServerStatus } from '../laptop/status';

const help = `Usage: stiefelctl status [--json] [--socket PATH] [--conf PATH]

What the running server (stiefelctl server, the laptop's stiefelOS) serves
now: the desktop holding the disk and since when, bytes read and written and
the rates of the last second, requests in flight and errors, the links (speed,
MTU, carrier), the power supply (battery level, mains), and the pairing code
for a desktop that PXE-boots. Asked through the server's local socket
(root only); the server samples once a second. In the laptop OS running on
the desktop (booted over the cable, where no server runs), the laptop itself
is asked, through the tunnel with this boot's token (${GOODBYE_CONF}).

Options:
  --json          one JSON object (its fields: README, "What the laptop serves")
  --socket PATH   the server's socket (default ${STATUS_SOCKET})
  --conf PATH     on the desktop: the laptop's address and token (default
                  ${GOODBYE_CONF})

Exit status: 0, or 1 when no server answers.
`;

function ask(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(path);
    s.setTimeout(5000, () => s.destroy(new Error('no answer within 5 s')));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

/** The status as one JSON object, or as the console's lines. */
const shown = (s: ServerStatus, json: boolean | undefined): string => (json ? `${JSON.stringify(s, null, 2)}\n` : `${formatStatus(s, Date.now()).join('\n')}\n`);

/** In the laptop OS on the desktop: the laptop's own status through the tunnel; undefined elsewhere. */
async function fromTheLaptop(conf: string): Promise<ServerStatus | undefined> {
  const address = await readLaptopAddress(conf).catch(() => undefined);
  if (!address) return undefined;
  const answer = await askLaptop(address, 5000);
  if ('status' in answer) return answer.status;
  throw new StiefelError(
    'E_STATUS',
    'refused' in answer ? `the laptop at ${address.host} no longer serves this desktop (it refuses this boot's token)` : `the laptop at ${address.host} did not answer: ${answer.error} (the cable is out or the laptop is off)`,
  );
}

export const statusCommand: Command = {
  name: 'status',
  summary: 'what the running server serves now: desktop, traffic, links, battery',
  help,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('status', argv, { json: { type: 'boolean' }, socket: { type: 'string' }, conf: { type: 'string' } }, { min: 0, max: 0, names: '' });
    const path = values.socket ?? STATUS_SOCKET;
    let text: string;
    try {
      text = await ask(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ECONNREFUSED') && values.socket === undefined) {
        const remote = await fromTheLaptop(values.conf ?? GOODBYE_CONF);
        if (remote) {
          ctx.stdout(shown(remote, values.json));
          return 0;
        }
      }
      if (code === 'ENOENT' || code === 'ECONNREFUSED') throw new StiefelError('E_STATUS', `no stiefelsystem server runs here (nothing answers at ${path}): it runs in the laptop's stiefelOS, or start it with 'stiefelctl server'`);
      if (code === 'EACCES') throw new StiefelError('E_STATUS', `${path} is root's: run 'sudo stiefelctl status'`);
      throw new StiefelError('E_STATUS', `the server at ${path} did not answer: ${(err as Error).message}`);
    }
    let status: ServerStatus;
    try {
      status = JSON.parse(text) as ServerStatus;
    } catch {
      throw new StiefelError('E_STATUS', `the server at ${path} sent something that is not its status`);
    }
    ctx.stdout(shown(status, values.json));
    return 0;
  },
};
