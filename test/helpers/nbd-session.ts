// Runs one NbdSession over an in-memory transport with a test client on the
// other end: the whole protocol state machine, no sockets.
import { MemoryBackend } from '../../src/nbd/backend-memory';
import { readOnlyBackend } from '../../src/nbd/backend-read-only';
import type { Backend } from '../../src/nbd/backend';
import { BufferPool } from '../../src/nbd/buffer-pool';
import type { BlockSizeConstraints } from '../../src/nbd/codec';
import { DEFAULT_BLOCK_SIZE } from '../../src/nbd/server';
import { NbdSession, type NbdExport } from '../../src/nbd/session';
import { silentLogger } from '../../src/log';
import { MemoryTransport, NbdTestClient } from './nbd-client';

export interface SessionHarness {
  session: NbdSession;
  transport: MemoryTransport;
  client: NbdTestClient;
  backend: Backend;
  exp: NbdExport;
}

export function startSession(
  options: {
    backend?: Backend;
    readOnly?: boolean;
    refusal?: string;
    maxInflightBytes?: number;
    blockSize?: Partial<BlockSizeConstraints>;
    size?: number;
    /** false: nobody parses the server's output (fuzzers send raw bytes). */
    parseReplies?: boolean;
    /** How the client's bytes reach the server (default: next turn, in pieces of at most 64 KiB). */
    deliver?: (bytes: Buffer, push: (piece: Buffer) => void) => void;
  } = {},
): SessionHarness {
  let backend: Backend = options.backend ?? new MemoryBackend({ size: options.size ?? 1024 * 1024 });
  if (options.readOnly) backend = readOnlyBackend(backend);
  const exp: NbdExport = { name: 'disk', description: 'a test disk', backend };
  const transport = new MemoryTransport();
  const session = new NbdSession(
    transport,
    {
      exports: { lookup: (n) => (n === '' || n === 'disk' ? exp : undefined), list: () => [exp] },
      blockSize: { ...DEFAULT_BLOCK_SIZE, ...options.blockSize },
      maxInflightBytes: options.maxInflightBytes ?? 64 * 1024 * 1024,
      pool: new BufferPool({ maxPooledBytes: 16 * 1024 * 1024 }),
      refusal: options.refusal,
    },
    { log: silentLogger },
  );
  // Client bytes reach the server asynchronously and in pieces of at most
  // 64 KiB, as a socket delivers them.
  const push = (piece: Buffer): void => transport.push(piece);
  const deliver =
    options.deliver ??
    ((b: Buffer) =>
      setImmediate(() => {
        for (let off = 0; off < b.length; off += 65536) push(b.subarray(off, off + 65536));
      }));
  const client = new NbdTestClient((b) => deliver(b, push));
  if (options.parseReplies ?? true) transport.connect((b) => client.feed(b));
  session.done.then(() => client.end());
  session.start();
  return { session, transport, client, backend, exp };
}

/** A backend wrapper whose calls wait `delay(offset)` ms first (to reorder completions). */
export function delayedBackend(inner: Backend, delay: (offset: number) => number): Backend {
  const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  return {
    size: inner.size,
    capabilities: inner.capabilities,
    description: inner.description,
    pread: async (buf, offset) => {
      await wait(delay(offset));
      return inner.pread(buf, offset);
    },
    pwrite: async (data, offset, o) => {
      await wait(delay(offset));
      return inner.pwrite(data, offset, o);
    },
    flush: () => inner.flush(),
    trim: (o, l, x) => inner.trim(o, l, x),
    writeZeroes: (o, l, x) => inner.writeZeroes(o, l, x),
    cache: (o, l) => inner.cache(o, l),
    extents: (o, l, n) => inner.extents(o, l, n),
    close: () => inner.close(),
  };
}
