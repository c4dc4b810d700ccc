// An ISO on a web server, read in pieces with HTTP Range requests: enough
// to inspect it (its volume descriptors, directories and boot menus are a
// few hundred KiB) before deciding how to download it. Pieces are fetched
// in 256 KiB blocks and the last ones kept. The server must answer 206
// with the file's whole length; redirects are followed (up to 5). What is
// read this way is only looked at: the download that is booted is checked
// by its SHA-256 as always.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import { StiefelError } from '../errors';
import type { OpenedIsoSource } from './file-source';

const BLOCK = 256 * 1024;
const KEPT_BLOCKS = 64;
const MAX_REDIRECTS = 5;
const TIMEOUT_MS = 30_000;

export interface HttpSourceOptions {
  ca?: string | Buffer;
  signal?: AbortSignal;
}

interface RangeReply {
  url: URL;
  body: Buffer;
  total: number;
  etag: string | undefined;
}

function get(url: URL, range: string, o: HttpSourceOptions): Promise<{ res: IncomingMessage; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = request(url, { headers: { range, 'accept-encoding': 'identity' }, timeout: TIMEOUT_MS, signal: o.signal, ...(url.protocol === 'https:' ? { ca: o.ca ? [...rootCertificates, o.ca.toString()] : [...rootCertificates] } : {}) }, (res) => {
      if (res.statusCode !== 206) {
        // A redirect, an error or the whole file: only the head counts.
        res.destroy();
        return resolve({ res, body: Buffer.alloc(0) });
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        // A server that ignores the range sends the whole file: stop at once.
        if (size > BLOCK * 2) res.destroy(new Error('the server sent more than the range asked for'));
        else chunks.push(c);
      });
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
    req.on('error', reject);
    req.end();
  });
}

async function fetchRange(start: URL, first: number, last: number, o: HttpSourceOptions): Promise<RangeReply> {
  let url = start;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let reply: { res: IncomingMessage; body: Buffer };
    try {
      reply = await get(url, `bytes=${first}-${last}`, o);
    } catch (err) {
      throw new StiefelError('E_ISO_RANGE', `cannot read ${url.host}${url.pathname} in pieces: ${(err as Error).message}`, { cause: err });
    }
    const { res, body } = reply;
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
      url = new URL(res.headers.location, url);
      continue;
    }
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '');
    if (status !== 206 || !m) throw new StiefelError('E_ISO_RANGE', `${url.host}${url.pathname} answered ${status} without a byte range, so it cannot be looked into before the download`);
    if (Number(m[1]) !== first || body.length !== Number(m[2]) - first + 1) throw new StiefelError('E_ISO_RANGE', `${url.host}${url.pathname} sent another range than asked for`);
    return { url, body, total: Number(m[3]), etag: res.headers.etag };
  }
  throw new StiefelError('E_ISO_RANGE', `more than ${MAX_REDIRECTS} redirects from ${start.host}${start.pathname}`);
}

/** The ISO at `url`, readable at any offset; its size from the first answer's Content-Range. */
export async function openHttpIsoSource(url: string, o: HttpSourceOptions = {}): Promise<OpenedIsoSource & { url: string }> {
  const first = await fetchRange(new URL(url), 0, BLOCK - 1, o);
  const size = first.total;
  const blocks = new Map<number, Buffer>([[0, first.body]]);
  const block = async (n: number): Promise<Buffer> => {
    const kept = blocks.get(n);
    if (kept) {
      blocks.delete(n);
      blocks.set(n, kept);
      return kept;
    }
    const from = n * BLOCK;
    const r = await fetchRange(first.url, from, Math.min(size, from + BLOCK) - 1, o);
    if (r.total !== size || r.etag !== first.etag) throw new StiefelError('E_ISO_RANGE', `${url} changed while it was read`);
    blocks.set(n, r.body);
    if (blocks.size > KEPT_BLOCKS) blocks.delete(blocks.keys().next().value!);
    return r.body;
  };
  return {
    name: url,
    url: first.url.href,
    size,
    async read(offset, length) {
      const end = Math.min(size, offset + length);
      const parts: Buffer[] = [];
      for (let at = offset; at < end; ) {
        const n = Math.floor(at / BLOCK);
        const b = await block(n);
        const inBlock = at - n * BLOCK;
        const take = Math.min(end - at, b.length - inBlock);
        if (take <= 0) break;
        parts.push(b.subarray(inBlock, inBlock + take));
        at += take;
      }
      return Buffer.concat(parts);
    },
    close: async () => {
      blocks.clear();
    },
  };
}
