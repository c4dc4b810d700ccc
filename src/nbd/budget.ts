// Memory budgets: how many bytes the server holds for its clients, per
// connection and for the whole server. Every request and reply is counted
// while it is held (read buffers, write payloads, replies waiting for the
// kernel, the bookkeeping of a request in flight); a connection over its
// budget is not read from until it is back under half of it. Pure
// accounting: no timers, no I/O.
//
// Fairness between connections: a connection may always go on while it holds
// less than its fair share (the server's limit divided among the connections
// in transmission), so clients that never read their replies cannot stall
// another one; above its share it goes on only while the whole server is
// under its limit. The server so holds at most its limit plus one request per
// connection.

export class MemoryBudget {
  #limit: number;
  /** Bytes held now. */
  used = 0;
  /** The most ever held at once. */
  peak = 0;
  readonly #server: MemoryBudget | undefined;
  // On a server's budget: the connections in transmission (sharing the
  // limit) and those waiting for room.
  readonly #sharing = new Set<MemoryBudget>();
  readonly #waiting = new Set<MemoryBudget>();
  // On a connection's budget.
  #resume: (() => void) | undefined;
  #closed = false;

  /** A server's budget; `connection()` makes the budgets of its connections. */
  constructor(limit: number, server?: MemoryBudget) {
    this.#limit = limit;
    this.#server = server;
  }

  get limit(): number {
    return this.#limit;
  }

  /** A connection's budget, starting with a small limit for the handshake. */
  connection(limit: number): MemoryBudget {
    return new MemoryBudget(limit, this);
  }

  /** Entering transmission: the connection's full limit and a share of the server's. */
  startSharing(limit: number): void {
    this.#limit = limit;
    if (!this.#closed && this.#server) this.#server.#sharing.add(this);
  }

  take(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
    if (!this.#closed) this.#server?.take(n);
  }

  give(n: number): void {
    const before = this.used;
    this.used -= n;
    if (this.#closed) return;
    const server = this.#server;
    if (server) {
      server.give(n);
      if (this.#resume && this.used <= this.#limit / 2) this.#check();
    } else if (before > this.#limit / 2 && this.used <= this.#limit / 2) {
      this.#wakeWaiting();
    }
  }

  /**
   * Whether a connection may take on another request now; asked after each
   * request the parser yields. One that holds nothing may always go on, so a
   * request larger than the budget still makes progress.
   */
  admits(): boolean {
    if (this.used === 0) return true;
    if (this.used >= this.#limit) return false;
    const s = this.#server;
    return !s || this.used < s.#fairShare() || s.used < s.#limit;
  }

  /** Calls `resume` (once) when the connection is back under half of what stopped it. */
  waitUntilAdmitted(resume: () => void): void {
    this.#resume = resume;
    if (this.#server) this.#server.#waiting.add(this);
    this.#check();
  }

  /** The connection has ended: what it still holds no longer counts for the server. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#resume = undefined;
    const s = this.#server;
    if (!s) return;
    s.#waiting.delete(this);
    s.give(this.used);
    // Its share goes to the others.
    if (s.#sharing.delete(this)) s.#wakeWaiting();
  }

  #fairShare(): number {
    return this.#limit / Math.max(1, this.#sharing.size);
  }

  #check(): void {
    const resume = this.#resume;
    if (!resume) return;
    const s = this.#server;
    const ownRoom = this.used <= this.#limit / 2;
    const serverRoom = !s || this.used <= s.#fairShare() / 2 || s.used <= s.#limit / 2;
    if (this.used === 0 || (ownRoom && serverRoom)) {
      this.#resume = undefined;
      if (s) s.#waiting.delete(this);
      resume();
    }
  }

  #wakeWaiting(): void {
    if (this.#waiting.size === 0) return;
    for (const c of [...this.#waiting]) c.#check();
  }
}
