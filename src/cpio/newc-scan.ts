// Reads a newc archive as it streams in, chunk by chunk, without holding it:
// each entry's header is reported, and the data of the entries the caller
// wants is collected. Pure: push(chunk) in, entries out. Concatenated
// archives (as initrds are) go on after each trailer; zero padding between
// them is skipped.
import { CpioError, NEWC_HEADER_SIZE, NEWC_MAGIC, NEWC_TRAILER } from './newc';

export interface ScannedCpioEntry {
  path: string;
  mode: number;
  size: number;
  /** The file's bytes, for entries `want` asked for; otherwise undefined. */
  data?: Buffer;
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

export class NewcScanner {
  readonly #want: (path: string) => boolean;
  readonly #maxData: number;
  #buf: Buffer = Buffer.alloc(0);
  /** Bytes of the current entry's data (and padding) still to skip or collect. */
  #pending: { entry: ScannedCpioEntry; left: number; pad: number; parts: Buffer[] | undefined } | undefined;
  #offset = 0;
  #between = true;

  /** `want(path)`: collect that entry's data (at most `maxData` bytes per entry). */
  constructor(want: (path: string) => boolean = () => false, maxData = 1 << 20) {
    this.#want = want;
    this.#maxData = maxData;
  }

  /** Bytes consumed so far. */
  get offset(): number {
    return this.#offset;
  }

  /** Feeds bytes; returns the entries completed by them, in order. Throws CpioError on a malformed archive. */
  push(chunk: Uint8Array): ScannedCpioEntry[] {
    const out: ScannedCpioEntry[] = [];
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    for (;;) {
      if (this.#pending) {
        const p = this.#pending;
        const take = Math.min(p.left, this.#buf.length);
        if (p.parts && take > 0) p.parts.push(this.#buf.subarray(0, take));
        p.left -= take;
        this.#consume(take);
        if (p.left > 0) break;
        const skip = Math.min(p.pad, this.#buf.length);
        p.pad -= skip;
        this.#consume(skip);
        if (p.pad > 0) break;
        if (p.parts) p.entry.data = Buffer.concat(p.parts);
        out.push(p.entry);
        this.#pending = undefined;
        continue;
      }
      if (this.#between) {
        // Zero padding between concatenated archives.
        let z = 0;
        while (z < this.#buf.length && this.#buf[z] === 0) z++;
        this.#consume(z);
        if (this.#buf.length === 0) break;
      }
      if (this.#buf.length < NEWC_HEADER_SIZE) break;
      const head = this.#buf.toString('latin1', 0, NEWC_HEADER_SIZE);
      if (!head.startsWith(NEWC_MAGIC)) throw new CpioError(`no newc header at byte ${this.#offset}`);
      const field = (i: number): number => {
        const text = head.slice(6 + i * 8, 14 + i * 8);
        if (!/^[0-9a-fA-F]{8}$/.test(text)) throw new CpioError(`bad cpio header field at byte ${this.#offset}`);
        return parseInt(text, 16);
      };
      const namesize = field(11);
      if (namesize < 1 || namesize > 4096) throw new CpioError(`cpio entry at byte ${this.#offset} has a name of ${namesize} bytes`);
      const nameEnd = NEWC_HEADER_SIZE + namesize;
      const dataStart = nameEnd + pad4(nameEnd);
      if (this.#buf.length < dataStart) break;
      if (this.#buf[nameEnd - 1] !== 0) throw new CpioError(`cpio name at byte ${this.#offset} is not NUL-terminated`);
      const path = this.#buf.toString('utf8', NEWC_HEADER_SIZE, nameEnd - 1);
      const size = field(6);
      const entry: ScannedCpioEntry = { path, mode: field(1), size };
      this.#consume(dataStart);
      if (path === NEWC_TRAILER) {
        if (size !== 0) throw new CpioError(`the cpio trailer at byte ${this.#offset} carries data`);
        this.#between = true;
        continue;
      }
      this.#between = false;
      const collect = this.#want(path);
      if (collect && size > this.#maxData) throw new CpioError(`cpio entry ${path} is ${size} bytes, more than the ${this.#maxData} looked at`);
      this.#pending = { entry, left: size, pad: pad4(size), parts: collect ? [] : undefined };
    }
    // Keep only what is not consumed (copy, so a big chunk is not retained).
    if (this.#buf.length > 0 && this.#buf.byteOffset !== 0) this.#buf = Buffer.from(this.#buf);
    return out;
  }

  /** True when the input so far ended between entries (after a trailer or at a clean boundary). */
  get atBoundary(): boolean {
    return this.#pending === undefined && this.#buf.length === 0;
  }

  #consume(n: number): void {
    this.#buf = this.#buf.subarray(n);
    this.#offset += n;
  }
}
