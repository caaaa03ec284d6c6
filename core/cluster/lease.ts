/**
 * Host leases: the basis of fencing. A host may run its HA VMs only while it
 * holds a lease, renewed by the leader after confirming it still leads (a
 * ReadIndex round). The leader re-places the HA VMs of a host only after that
 * host's lease has surely expired; the host stops them before it expires.
 *
 * Both sides measure from conservative ends: the host counts from when it
 * *sent* a renewal that was granted, the leader from when it *granted* the
 * last one (later), plus a margin for clock-rate differences. A new leader
 * knows nothing of earlier grants, so it counts every host from its own
 * election.
 */

/** Leader side: when each host was last granted its lease (monotonic ms). */
export class LeaseTable {
  private readonly grants = new Map<string, number>();
  private leaderSince = performance.now();

  /** Called when this node becomes leader: earlier grants were made by someone else. */
  resetForNewTerm(now = performance.now()): void {
    this.grants.clear();
    this.leaderSince = now;
  }

  grant(host: string, now = performance.now()): void {
    this.grants.set(host, now);
  }

  /** Milliseconds since `host`'s lease was last granted (or since this leader took over). */
  silentFor(host: string, now = performance.now()): number {
    return now - Math.max(this.grants.get(host) ?? this.leaderSince, this.leaderSince);
  }

  /** True once the host can no longer hold a lease, whatever its clock did. */
  surelyExpired(host: string, leaseMs: number, now = performance.now()): boolean {
    return this.silentFor(host, now) > leaseMs + safetyMarginMs(leaseMs);
  }
}

/** Host side: how long this host may still run HA VMs. */
export class LeaseHolder {
  /** Wall-clock expiry: survives a restart of the node process (see persistence in the caller). */
  private validUntil: number;

  constructor(initialValidUntil = 0) {
    this.validUntil = initialValidUntil;
  }

  /** A renewal sent at `sentAt` (wall clock ms) was granted for `leaseMs`. */
  granted(sentAt: number, leaseMs: number): number {
    this.validUntil = Math.max(this.validUntil, sentAt + leaseMs);
    return this.validUntil;
  }

  /** True while HA VMs may run here: the lease has more than the fencing margin left. */
  holds(now = Date.now(), fenceMarginMs = 1_000): boolean {
    return now < this.validUntil - fenceMarginMs;
  }

  expiresAt(): number {
    return this.validUntil;
  }
}

/** Extra wait on the leader's side beyond the lease: covers clock-rate drift and scheduling delays. */
export function safetyMarginMs(leaseMs: number): number {
  return Math.max(1_000, Math.round(leaseMs * 0.1));
}
