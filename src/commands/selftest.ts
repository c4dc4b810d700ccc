import { access } from 'node:fs/promises';
import { parseCommandArgs, type Command } from '../cli/command';
import { StiefelError, UsageError } from '../errors';
import { IMAGE_PATHS } from '../image/build';
import { runSelftest } from '../selftest/run';
import { createSelftestSystem } from '../selftest/system';

const help = `Usage: stiefelctl selftest [--nic-timeout SECONDS]

Checks, inside stiefelOS, that everything the server and client roles drive
is there and works: node, kexec, ip, wg, cryptsetup, lvm, blkid, mount, umount,
modprobe and busybox run (their libraries resolve); the nbd and wireguard
modules load; at least one NIC comes up with an IPv6 link-local address.
Prints one line per check, then STIEFEL-SELFTEST-OK or
STIEFEL-SELFTEST-FAILED: <what>. Exit status 0 or 1.

stiefelOS's /init runs it for stiefel.role=selftest and powers off after.
It loads modules and brings NICs up, so it refuses to run outside stiefelOS.

Options:
  --nic-timeout SECONDS   how long to wait for a link-local address (default 30)
`;

export const selftestCommand: Command = {
  name: 'selftest',
  summary: 'check a running stiefelOS (run by its /init for stiefel.role=selftest)',
  help,
  async run(argv, ctx) {
    const { values } = parseCommandArgs('selftest', argv, { 'nic-timeout': { type: 'string' } }, { min: 0, max: 0, names: '' });
    let nicTimeout = 30;
    if (values['nic-timeout'] !== undefined) {
      if (!/^\d+$/.test(values['nic-timeout'])) throw new UsageError('--nic-timeout must be whole seconds', { command: 'selftest' });
      nicTimeout = Number(values['nic-timeout']);
    }
    const inImage = await access(IMAGE_PATHS.release).then(
      () => true,
      () => false,
    );
    if (!inImage) {
      throw new StiefelError(
        'E_SELFTEST_HOST',
        `this is not stiefelOS (${IMAGE_PATHS.release} is missing): the self-test loads modules and brings NICs up, so it runs only inside stiefelOS; boot the image with stiefel.role=selftest`,
      );
    }
    const ok = await runSelftest(
      createSelftestSystem(ctx.env),
      { nodeVersion: process.version, nodePath: process.execPath, nicTimeoutMs: nicTimeout * 1000 },
      (line) => ctx.stdout(`${line}\n`),
    );
    return ok ? 0 : 1;
  },
};
