// Opening a LUKS container read-only for as long as we read /boot from it:
//   cryptsetup open --readonly --type luks --key-file=- DEVICE NAME   (passphrase on stdin)
//   ... read /dev/mapper/NAME ...
//   cryptsetup close NAME                                            (always)
// A wrong passphrase is exit code 2 ("No key available with this
// passphrase"): we ask again, up to the provider's attempts.
// Verified against the real cryptsetup 2.6 and a LUKS2 container inside a VM
// (test/vm/boot-entries-luks-lvm.test.ts): no udev and no /run/cryptsetup are
// needed; libdevmapper makes /dev/mapper/NAME itself when udev is not running.
import { StiefelError } from '../errors';
import type { CleanupStack } from './cleanup';
import type { CommandRunner } from './runner';
import { runChecked } from './runner';
import type { PassphraseProvider } from './passphrase';

export const CRYPTSETUP_WRONG_PASSPHRASE = 2;

export interface LuksOpenOptions {
  runner: CommandRunner;
  cleanup: CleanupStack;
  passphrase: PassphraseProvider;
  signal?: AbortSignal;
  /** The mapping name, e.g. stf4-luks-1 (unique to this run). */
  name: string;
  /** How to name the container to the person asked, e.g. "disk.img partition 3". */
  label: string;
}

/** Opens `device`; returns the /dev/mapper path. Throws E_LUKS_PASSPHRASE when the attempts run out. */
export async function openLuks(device: string, o: LuksOpenOptions): Promise<string> {
  const attempts = Math.max(1, o.passphrase.attempts ?? 3);
  for (let attempt = 1; attempt <= attempts; attempt++) {
    if (o.signal?.aborted) throw new StiefelError('E_INTERRUPTED', 'interrupted');
    const question = attempt === 1 ? `Passphrase for the encrypted ${o.label}: ` : `Wrong passphrase, try again (${attempt} of ${attempts}) for ${o.label}: `;
    const pass = await o.passphrase.ask(question, { attempt, attempts, signal: o.signal });
    const r = await o.runner.run('cryptsetup', ['open', '--readonly', '--type', 'luks', '--key-file=-', device, o.name], { input: pass });
    if (r.code === 0) {
      o.cleanup.push(`LUKS mapping ${o.name}`, async () => void (await runChecked(o.runner, 'E_LUKS_CLOSE', 'cryptsetup', ['close', o.name])));
      return `/dev/mapper/${o.name}`;
    }
    if (r.code !== CRYPTSETUP_WRONG_PASSPHRASE) {
      throw new StiefelError('E_LUKS', `cryptsetup open ${device} failed: ${r.stderr.trim().split('\n').pop() || `exit code ${r.code}`}`);
    }
  }
  const origin = o.passphrase.origin ?? 'the passphrase given';
  const tries = attempts === 1 ? '' : ` (${attempts} attempts)`;
  throw new StiefelError('E_LUKS_PASSPHRASE', `${origin} does not open ${o.label} (LUKS)${tries}${o.passphrase.hint ? `: ${o.passphrase.hint}` : ''}`);
}
