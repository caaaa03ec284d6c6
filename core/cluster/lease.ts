/**
 * Host leases: the basis of fencing. A host may run its HA VMs only while it
 * holds a lease, renewed by the leader after confirming it still leads (a
 * ReadIndex round). The leader re-places the HA VMs of a host only after that
 * host's lease has surely expired; the host's fencing watchdog kills them
 * before it expires.
 *
 * Both sides measure from conservative ends on monotonic clocks, never the
 * wall clock: the host counts from when it *sent* a renewal that was granted
 * (on CLOCK_BOOTTIME, which the node and its watchdog share), the leader from
 * when it *granted* the last one (later, on its own monotonic clock), plus a
 * margin for clock-rate differences. Grants belong to the leader's term: a
 * leader knows nothing of grants made in another term (its own earlier terms
 * included), so it counts every host from when it noticed its current term.
 */

/**
 * Milliseconds of CLOCK_BOOTTIME, read from /proc/uptime: monotonic, counts
 * time suspended, and is the same clock for every process on the host, so a
 * deadline computed by one process means the same instant to another.
 */
export function bootTimeMs(): number {
  const text = Deno.readTextFileSync("/proc/uptime");
  return Math.round(Number.parseFloat(text) * 1_000);
}

/**
 * Leader side: until when each host may hold the leases granted to it in the
 * current term (monotonic ms). Each grant's own length counts, so lowering
 * `ha.leaseMs` never makes a host expire here before it fenced itself.
 */
export class LeaseTable {
  private readonly leases = new Map<string, { until: number; leaseMs: number }>();
  private term: number | null = null;
  private leaderSince = 0;

  /** @param currentTerm the term this node leads in, or null while it does not lead */
  constructor(private readonly currentTerm: () => number | null) {}

  /** Forgets every grant once the term (or the role) differs from the one they were made in. */
  private sync(now: number): number | null {
    const term = this.currentTerm();
    if (term !== this.term) {
      this.leases.clear();
      this.term = term;
      this.leaderSince = now;
    }
    return term;
  }

  grant(host: string, leaseMs: number, now = performance.now()): void {
    if (this.sync(now) === null) return;
    const prev = this.leases.get(host);
    this.leases.set(host, {
      until: Math.max(prev?.until ?? 0, now + leaseMs),
      leaseMs: Math.max(prev?.leaseMs ?? 0, leaseMs),
    });
  }

  /**
   * True once the host can no longer hold a lease, whatever its clock did: its
   * last grant in this term (or the term's start here) plus the lease and a
   * margin lie in the past. Never true off the leader.
   */
  surelyExpired(host: string, leaseMs: number, now = performance.now()): boolean {
    if (this.sync(now) === null) return false;
    const granted = this.leases.get(host);
    const until = Math.max(granted?.until ?? 0, this.leaderSince + leaseMs);
    return now > until + safetyMarginMs(Math.max(leaseMs, granted?.leaseMs ?? 0));
  }
}

/** How long before its lease ends a host fences its HA VMs. */
export const FENCE_MARGIN_MS = 1_000;

/** Host side: how long this host may still run HA VMs (CLOCK_BOOTTIME ms). */
export class LeaseHolder {
  private validUntil: number;

  constructor(initialValidUntil = 0) {
    this.validUntil = initialValidUntil;
  }

  /**
   * A renewal sent at `sentAt` (boot-clock ms) was granted for `leaseMs`. The
   * latest grant replaces earlier ones (renewals run one at a time), so a
   * shorter `ha.leaseMs` takes effect here at once.
   */
  granted(sentAt: number, leaseMs: number): number {
    this.validUntil = sentAt + leaseMs;
    return this.validUntil;
  }

  /** True while HA VMs may run here: the lease has more than the fencing margin left. */
  holds(now = bootTimeMs()): boolean {
    return now < this.fenceAt();
  }

  /** The instant (boot-clock ms) HA VMs must be dead by. */
  fenceAt(): number {
    return this.validUntil - FENCE_MARGIN_MS;
  }

  /** Gives the lease up at once (the host lost its means of fencing). */
  revoke(): void {
    this.validUntil = 0;
  }
}

/** Extra wait on the leader's side beyond the lease: covers clock-rate drift and scheduling delays. */
export function safetyMarginMs(leaseMs: number): number {
  return Math.max(1_000, Math.round(leaseMs * 0.1));
}
