import { isIPv4 } from 'node:net';

/** An IPv4 client of a dual-stack (::) listener appears as ::ffff:a.b.c.d: the IPv4 address it is. */
export function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
}
