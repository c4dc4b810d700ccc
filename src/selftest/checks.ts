// Pure parts of stiefelOS's self-test: reading /proc/net/if_inet6 and the
// lines it prints. The self-test prints one line per check and then exactly
// one verdict line, which the QEMU tests wait for on the serial console.

export const SELFTEST_OK = 'STIEFEL-SELFTEST-OK';
export const SELFTEST_FAILED = 'STIEFEL-SELFTEST-FAILED';

/** IPv6 address scopes and flags as /proc/net/if_inet6 shows them (include/net/ipv6.h, if_addr.h). */
export const IPV6_ADDR_LINKLOCAL = 0x20;
export const IFA_F_DADFAILED = 0x08;
export const IFA_F_TENTATIVE = 0x40;

export interface Inet6Address {
  address: string;
  ifindex: number;
  prefixLength: number;
  scope: number;
  flags: number;
  ifname: string;
}

/** `fe800000000000005054fffe12345602` → `fe80::5054:ff:fe12:3402` (RFC 5952 form). */
export function formatIpv6(hex: string): string {
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`'${hex}' is not 32 hex digits`);
  const groups = Array.from({ length: 8 }, (_, i) => parseInt(hex.slice(i * 4, i * 4 + 4), 16));
  // The longest run of two or more zero groups becomes '::' (the first one on a tie).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = groups.map((g) => g.toString(16));
  if (best < 0) return text.join(':');
  return `${text.slice(0, best).join(':')}::${text.slice(best + bestLen).join(':')}`;
}

/** Lines of /proc/net/if_inet6: `ADDRESS IFINDEX PREFIXLEN SCOPE FLAGS NAME`, numbers in hex. */
export function parseIfInet6(text: string): Inet6Address[] {
  const out: Inet6Address[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 6 || !/^[0-9a-f]{32}$/i.test(f[0]!)) continue;
    out.push({
      address: formatIpv6(f[0]!),
      ifindex: parseInt(f[1]!, 16),
      prefixLength: parseInt(f[2]!, 16),
      scope: parseInt(f[3]!, 16),
      flags: parseInt(f[4]!, 16),
      ifname: f[5]!,
    });
  }
  return out;
}

/** Link-local addresses that finished duplicate address detection, by interface. */
export function usableLinkLocal(addresses: readonly Inet6Address[]): Inet6Address[] {
  return addresses.filter(
    (a) => a.scope === IPV6_ADDR_LINKLOCAL && (a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)) === 0 && a.ifname !== 'lo',
  );
}

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

export function formatCheck(r: CheckResult): string {
  return `selftest: ${r.ok ? 'ok  ' : 'FAIL'} ${r.name}: ${r.detail.replace(/\s*\n\s*/g, ' | ')}`;
}

export function formatVerdict(results: readonly CheckResult[]): string {
  const failed = results.filter((r) => !r.ok);
  if (results.length === 0) return `${SELFTEST_FAILED}: no checks ran`;
  if (failed.length === 0) return SELFTEST_OK;
  return `${SELFTEST_FAILED}: ${failed.map((r) => r.name).join(', ')}`;
}
