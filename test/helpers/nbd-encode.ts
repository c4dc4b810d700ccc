// What an NBD client sends, encoded: the exact inverse of what the server's
// parser reads. Tests, fuzzers and benchmarks speak to the server with it
// (the server itself never encodes these).
import type { NbdRequest } from '../../src/nbd/codec';
import { IHAVEOPT, NBD_OPTION_HEADER_SIZE, NBD_REQUEST_MAGIC, NBD_REQUEST_SIZE } from '../../src/nbd/protocol';

const EMPTY = Buffer.alloc(0);

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function encodeOption(option: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(NBD_OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, 16);
  return b;
}

export function encodeGoOptionData(name: string, infoRequests: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(6 + n.length + 2 * infoRequests.length);
  b.writeUInt32BE(n.length, 0);
  b.set(n, 4);
  b.writeUInt16BE(infoRequests.length, 4 + n.length);
  infoRequests.forEach((r, i) => b.writeUInt16BE(r, 6 + n.length + 2 * i));
  return b;
}

export function encodeMetaContextOptionData(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

export function encodeRequest(req: NbdRequest, payload?: Uint8Array): Buffer {
  const b = Buffer.alloc(NBD_REQUEST_SIZE + (payload?.length ?? 0));
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  b.writeUInt32BE(req.handleHi >>> 0, 8);
  b.writeUInt32BE(req.handleLo >>> 0, 12);
  writeU64(b, 16, req.offset);
  b.writeUInt32BE(req.length >>> 0, 24);
  if (payload) b.set(payload, NBD_REQUEST_SIZE);
  return b;
}

function writeU64(b: Buffer, off: number, value: number): void {
  b.writeUInt32BE(Math.floor(value / 0x1_0000_0000) >>> 0, off);
  b.writeUInt32BE(value >>> 0, off + 4);
}
