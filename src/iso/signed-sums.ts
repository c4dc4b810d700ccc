// A distribution's signed checksum list: SHA256SUMS (GNU coreutils' lines,
// `HEX  NAME` or `HEX *NAME`, as Debian and Ubuntu publish it; BSD's
// `SHA256 (NAME) = HEX` too) and its detached OpenPGP signature
// (SHA256SUMS.sign at Debian, SHA256SUMS.gpg at Ubuntu), or one clear-signed
// file (Fedora's CHECKSUM: the BSD lines inside an OpenPGP signed message),
// checked with gpgv against a keyring the user chose. The ISO's own SHA-256
// is then taken from the list (of a clear-signed one, from only the text
// gpgv says the signature covers), so a download is trusted as far as the
// keyring is.
import { StiefelError } from '../errors';
import type { CommandRunner } from '../disk/runner';

/** Where the signature of SUMS is looked for, in this order (Debian's, Ubuntu's, an armored one). */
export const SIGNATURE_SUFFIXES = ['.sign', '.gpg', '.asc'] as const;

/** The first line of a clear-signed file (RFC 9580, section 7). */
export const CLEARSIGNED_HEADER = '-----BEGIN PGP SIGNED MESSAGE-----';

/** Pure: whether a checksum list carries its signature inside (Fedora's CHECKSUM), from its first line. */
export function isClearSigned(text: string): boolean {
  return text.split(/\r?\n/, 1)[0]!.trimEnd() === CLEARSIGNED_HEADER;
}

/** Pure: file name to SHA-256 (lower-case hex) from a checksum list; lines that are neither form are skipped. */
export function parseSha256Sums(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    const gnu = /^([0-9A-Fa-f]{64}) [ *](.+)$/.exec(line);
    const bsd = /^SHA256 \((.+)\) = ([0-9A-Fa-f]{64})$/.exec(line);
    const [name, hex] = gnu ? [gnu[2]!, gnu[1]!] : bsd ? [bsd[1]!, bsd[2]!] : [];
    if (name === undefined || hex === undefined) continue;
    // Listed as ./name or with directories: the name is what a URL's last segment would be.
    out.set(name.replace(/^(\.\/)+/, ''), hex.toLowerCase());
  }
  return out;
}

/** Pure: the SHA-256 the list gives for `name` (the ISO's file name), by its path or, failing that, its base name. */
export function sumFor(sums: ReadonlyMap<string, string>, name: string, listName: string): string {
  const exact = sums.get(name);
  if (exact) return exact;
  const byBase = [...sums].filter(([n]) => n.split('/').at(-1) === name);
  if (byBase.length === 1) return byBase[0]![1];
  throw new StiefelError('E_ISO_SUMS', `${listName} does not list ${name}${sums.size ? ` (it lists ${[...sums.keys()].slice(0, 3).join(', ')}${sums.size > 3 ? ', ...' : ''})` : ' (it lists no SHA-256 at all)'}: give the checksum list of this ISO's directory`);
}

/** Pure: gpgv's --status-fd lines: the signing key's fingerprint when a good signature was made by a key of the keyring. */
export function validSignature(status: string): string | undefined {
  return /^\[GNUPG:\] VALIDSIG ([0-9A-F]{40,64})\b/m.exec(status)?.[1];
}

/**
 * Checks `signature` over `sums` with gpgv and only the keys in `keyring`
 * (a file of exported public keys, `gpg --export KEY > FILE`). Without a
 * signature, `sums` is clear-signed: gpgv writes the text its signature
 * covers to `output`, the only part to be read. Throws with gpgv's reason
 * when it does not verify.
 */
export async function verifySignedSums(o: { sums: string; signature?: string; output?: string; keyring: string; runner: CommandRunner }): Promise<{ fingerprint: string }> {
  if (o.signature === undefined && o.output === undefined) throw new Error('verifySignedSums: a clear-signed list needs output');
  const files = o.signature === undefined ? ['--output', o.output!, o.sums] : [o.signature, o.sums];
  const r = await o.runner.run('gpgv', ['--status-fd', '1', '--keyring', o.keyring, ...files]).catch((err: Error) => ({ code: 127, stdout: '', stderr: err.message }));
  const fingerprint = r.code === 0 ? validSignature(r.stdout) : undefined;
  if (fingerprint) return { fingerprint };
  if (r.code === 127 && !r.stdout) throw new StiefelError('E_ISO_SIGNATURE', `gpgv is not here (${r.stderr.trim()}): install the gpgv package, or give --sha256 HEX instead of --sums`);
  const why = /^\[GNUPG:\] (BADSIG|NO_PUBKEY|EXPSIG|EXPKEYSIG|REVKEYSIG|ERRSIG|NODATA)\b.*$/m.exec(r.stdout)?.[1];
  const reason =
    why === 'BADSIG' ? 'the signature is bad (the list was changed after it was signed)'
    : why === 'NO_PUBKEY' || why === 'ERRSIG' ? `it was not made by a key in ${o.keyring}`
    : why === 'NODATA' ? 'the signature file holds no signature'
    : why ? `gpgv says ${why}`
    : (r.stderr.trim().split('\n').at(-1) ?? `gpgv exited ${r.code}`);
  throw new StiefelError('E_ISO_SIGNATURE', `the signature of the checksum list does not verify: ${reason}; nothing is booted`);
}
