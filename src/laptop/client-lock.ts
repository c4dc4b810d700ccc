// One client host at a time: the laptop's disk must only ever be written by
// one desktop. The lock follows a desktop through its boot:
//
//   free --payload request--> payload --done--> handoff --disk connect--> disk
//     ^                          |                 |                      |
//     +------ idle timeout ------+---- timeout ----+---- last disconnect --+
//
// During `handoff` the desktop is kexec'ing the laptop OS, whose initramfs
// then connects to the disk: from the same link-local address (the same NIC,
// whose EUI-64 address follows from its MAC) or from an address the laptop
// handed out for this boot (the WireGuard tunnel address, expectDiskPeer()).
// Everything else from another host is refused until the handoff times out.
// The last disk connection ending frees the lock only when the desktop let
// the disk go (its goodbye, or NBD_CMD_DISC). Otherwise (a reset, a dead
// connection its kernel gave up, a power cut) the disk stays held for that
// desktop, which may still have it mounted: it alone may connect again
// (stiefel-nbd-reconnect does), or boot again (a payload request from the
// address it fetched its payload from: the same NIC, so the same machine,
// whose old OS is gone); everyone else is refused until the laptop stops
// serving (its way back: R on its console).
// Pure: time comes from `now`.

import { unmapIPv4 } from '../netif/address';

export type LockState = 'free' | 'payload' | 'handoff' | 'disk';

export interface LockOwner {
  host: string;
  state: Exclude<LockState, 'free'>;
  /** When this host took the server, ms since the epoch. */
  sinceMs: number;
  /** The disk is held for this host, which has no connection open: it left without letting the disk go. */
  held?: true;
}

export type LockDecision = { ok: true; replacedSession?: string } | { ok: false; owner: LockOwner };

export interface ClientLockOptions {
  /** How long a client that fetched its payload keeps the server while it boots. */
  handoffMs: number;
  /** A payload client with no open request for this long is gone. */
  idleMs: number;
  now?: () => number;
}

export class ClientLock {
  readonly #handoffMs: number;
  readonly #idleMs: number;
  readonly #now: () => number;
  #state: LockState = 'free';
  #host = '';
  #session = '';
  #since = 0;
  #lastActivity = 0;
  #openRequests = 0;
  #handoffUntil = 0;
  #diskConnections = 0;
  #held = false;
  /** The address the disk's desktop fetched its payload from (its NIC's), kept while the disk is held. */
  #bootHost = '';
  readonly #expectedDiskPeers = new Set<string>();

  constructor(options: ClientLockOptions) {
    this.#handoffMs = options.handoffMs;
    this.#idleMs = options.idleMs;
    this.#now = options.now ?? Date.now;
  }

  /** Expires idle payload sessions and finished handoffs. */
  #expire(): void {
    const now = this.#now();
    if (this.#state === 'payload' && this.#openRequests === 0 && now - this.#lastActivity > this.#idleMs) this.#free();
    if (this.#state === 'handoff' && now > this.#handoffUntil) this.#free();
  }

  #free(): void {
    this.#expectedDiskPeers.clear();
    this.#state = 'free';
    this.#host = '';
    this.#session = '';
    this.#openRequests = 0;
    this.#diskConnections = 0;
    this.#held = false;
    this.#bootHost = '';
  }

  #take(state: Exclude<LockState, 'free'>, host: string): void {
    if (this.#host !== host) this.#since = this.#now();
    this.#state = state;
    this.#host = host;
    this.#lastActivity = this.#now();
  }

  get state(): LockState {
    this.#expire();
    return this.#state;
  }

  owner(): LockOwner | undefined {
    this.#expire();
    if (this.#state === 'free') return undefined;
    return { host: this.#host, state: this.#state, sinceMs: this.#since, ...(this.#held && { held: true as const }) };
  }

  /** Whether a host other than `host` (or anyone, without one) holds the server. */
  busyFor(host?: string): boolean {
    const o = this.owner();
    return o !== undefined && o.host !== host;
  }

  /** A payload request from `host` in client session `session` starts. */
  beginRequest(host: string, session: string): LockDecision {
    this.#expire();
    // The desktop the disk is held for boots again: its old OS is gone.
    if (this.#held && host === this.#bootHost) this.#free();
    if (this.#state !== 'free' && this.#host !== host) return { ok: false, owner: this.owner()! };
    let replacedSession: string | undefined;
    if (this.#state !== 'free' && this.#session && this.#session !== session) replacedSession = this.#session;
    // A late request of a session that already handed off does not undo it.
    const keep = this.#state === 'disk' || (this.#state === 'handoff' && this.#session === session);
    if (keep) this.#lastActivity = this.#now();
    else this.#take('payload', host);
    this.#session = session;
    this.#openRequests += 1;
    return replacedSession ? { ok: true, replacedSession } : { ok: true };
  }

  endRequest(host: string): void {
    if (this.#host !== host || this.#openRequests === 0) return;
    this.#openRequests -= 1;
    this.#lastActivity = this.#now();
  }

  /** The client verified its payload and goes on to boot. */
  handOff(host: string): void {
    this.#expire();
    if (this.#host !== host || this.#state !== 'payload') return;
    this.#state = 'handoff';
    this.#handoffUntil = this.#now() + this.#handoffMs;
  }

  /** The current client will also reach the disk from `host` (its tunnel address, say). */
  expectDiskPeer(host: string): void {
    if (this.#state !== 'free') this.#expectedDiskPeers.add(host);
  }

  /** A disk (NBD) connection from `host` wants in. */
  admitDisk(host: string): LockDecision {
    this.#expire();
    const mayTake =
      this.#state === 'free' ||
      ((this.#state === 'payload' || this.#state === 'handoff') && (this.#host === host || this.#expectedDiskPeers.has(host))) ||
      (this.#state === 'disk' && this.#host === host);
    if (!mayTake) return { ok: false, owner: this.owner()! };
    if (this.#state !== 'disk') {
      this.#diskConnections = 0;
      this.#bootHost = this.#state === 'free' ? host : this.#host;
    }
    this.#take('disk', host);
    this.#diskConnections += 1;
    this.#held = false;
    return { ok: true };
  }

  /**
   * A disk connection of `host` ended; `letGo`: the desktop let the disk go
   * (said goodbye or detached it). True when it was the host's last.
   */
  diskClosed(host: string, letGo: boolean): boolean {
    if (this.#state !== 'disk' || this.#host !== host || this.#diskConnections === 0) return false;
    this.#diskConnections -= 1;
    if (this.#diskConnections > 0) return false;
    if (letGo) this.#free();
    else this.#held = true;
    return true;
  }
}

/** What the refused desktop (and the laptop's log) is told. */
export function busyMessage(owner: LockOwner): string {
  const since = new Date(owner.sinceMs).toISOString().slice(11, 19);
  if (owner.held) {
    return `the laptop is busy: its disk is held for the desktop at ${owner.host}, which left without letting it go and may still have it mounted (since ${since} UTC); only that desktop may boot from it, until the laptop returns to its own OS (R on its console)`;
  }
  const what =
    owner.state === 'disk'
      ? 'its disk is in use by'
      : owner.state === 'handoff'
        ? 'it is waiting for the disk connection of'
        : 'it is serving';
  return `the laptop is busy: ${what} the desktop at ${owner.host} (since ${since} UTC); only one desktop at a time`;
}

/** The address a lock is keyed by: no port; IPv4-mapped IPv6 unwrapped. */
export function peerHost(address: string | undefined): string {
  if (!address) return 'unknown';
  return unmapIPv4(address);
}
