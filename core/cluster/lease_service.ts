/**
 * Lease renewal: every host asks the leader for its lease each heartbeat
 * interval; the leader grants it only after a ReadIndex round proves it still
 * leads a quorum. Each granted lease is handed to the host's fencer (its
 * watchdog process), which kills the host's HA VMs when the lease runs out
 * unrenewed; a restarted node learns the lease it held from the fencer.
 */
import type { ClusterNode } from "./node.ts";
import { bootTimeMs, type LeaseHolder, type LeaseTable, safetyMarginMs } from "./lease.ts";
import { UnavailableError } from "../errors/mod.ts";
import { log } from "../log/mod.ts";
import { auditSystem } from "./audit.ts";
import type { ClusterConfig } from "../config/mod.ts";

/** The host's fencing device, as the renewal loop sees it. */
export interface Fencer {
  /** HA VMs must be dead by `fenceAt` (CLOCK_BOOTTIME ms) unless fed again. */
  feed(fenceAt: number): Promise<void>;
  /** Whether the device is there to fence: without it the host may hold no lease. */
  alive(): boolean;
}

/** How long a renewal waits for others to share its leadership check. */
const LEASE_READ_COALESCE_MS = 10;

/**
 * Leader side: grant after confirming leadership. Returns the index the host
 * must have applied before acting on its state: the leader's last index, so it
 * covers every decision the leader took before granting (a re-placement of the
 * host's VMs included, even one not committed yet).
 */
export async function grantLease(
  node: ClusterNode,
  leases: LeaseTable,
  host: string,
): Promise<LeaseGrant> {
  if (node.transport.blocked.has(host)) {
    throw new UnavailableError("partitioned (fault injection)");
  }
  node.heardFrom(host);
  // Renewals come from every host each interval: they share a round per window.
  await node.linearizableRead({ coalesceMs: LEASE_READ_COALESCE_MS });
  const settings = node.fsm.settings();
  const leaseMs = settings["ha.leaseMs"];
  leases.grant(host, leaseMs);
  return {
    leaseMs,
    commitIndex: node.raft.basicStatus().lastIndex,
    renewInMs: renewalIntervalMs(settings, node.fsm.nodeCount()),
  };
}

/** What the leader answers a renewal. */
export interface LeaseGrant {
  leaseMs: number;
  /** The index the host must have applied before acting on its state. */
  commitIndex: number;
  /** When the host should renew next (absent from leaders older than this field). */
  renewInMs?: number;
}

/**
 * How often hosts renew: every nodes.heartbeatIntervalMs, spread out once the hosts would
 * send the leader more than nodes.maxLeaseRenewalsPerSec renewals a second (Nomad scales
 * its clients' heartbeat TTL with their number the same way), but never beyond a quarter of
 * the lease, so three renewals in a row can fail before the host must fence itself.
 */
export function renewalIntervalMs(
  settings: Pick<
    ClusterConfig,
    "nodes.heartbeatIntervalMs" | "nodes.maxLeaseRenewalsPerSec" | "ha.leaseMs"
  >,
  hosts: number,
): number {
  const base = settings["nodes.heartbeatIntervalMs"];
  const spread = Math.ceil(hosts / settings["nodes.maxLeaseRenewalsPerSec"] * 1000);
  return Math.max(base, Math.min(spread, Math.floor(settings["ha.leaseMs"] / 4)));
}

/** Asks the leader (or itself, when leading) for this host's lease. */
async function requestLease(node: ClusterNode, leases: LeaseTable): Promise<LeaseGrant> {
  if (node.isLeader()) return await grantLease(node, leases, node.id);
  const leader = node.leaderId();
  const url = node.leaderUrl();
  if (!leader || !url) throw new UnavailableError("no leader");
  if (node.transport.blocked.has(leader)) throw new UnavailableError("partitioned");
  const res = await node.peerHttp.fetch(`${url}/internal/lease`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ node: node.id }),
    signal: AbortSignal.timeout(2_000),
  });
  if (!res.ok) throw new UnavailableError(`lease refused: HTTP ${res.status}`);
  return await res.json();
}

/**
 * Host side: renews in a loop until stopped; `onGranted` sees the index to
 * catch up to. When the fencer is lost the host gives its lease up and stops
 * renewing until the leader has surely seen it expire: the HA VMs that died
 * with the fencer are then restarted elsewhere, not raced back here.
 */
export function keepLeaseRenewed(
  node: ClusterNode,
  holder: LeaseHolder,
  leases: LeaseTable,
  fencer: Fencer,
  onGranted: (commitIndex: number) => void,
): { stop(): void; fencingLost(): void } {
  let stopped = false;
  let pausedUntil = 0;
  const fencingLost = () => {
    holder.revoke();
    const leaseMs = node.fsm.settings()["ha.leaseMs"];
    const interval = node.fsm.settings()["nodes.heartbeatIntervalMs"];
    pausedUntil = bootTimeMs() + leaseMs + safetyMarginMs(leaseMs) + 2 * interval;
    auditSystem(node, "fencing.giveUpLease", `node/${node.id}`, "fencing watchdog lost");
    log.warn("fencing watchdog lost: giving up the lease", {
      renewingInMs: pausedUntil - bootTimeMs(),
    });
  };
  let renewInMs: number | undefined;
  const renewOnce = async (): Promise<void> => {
    renewInMs = undefined;
    if (bootTimeMs() < pausedUntil || !fencer.alive()) return;
    const sentAt = bootTimeMs();
    const lapsed = !holder.holds(sentAt);
    const granted = await requestLease(node, leases);
    // After a gap the leader may have moved this host's HA VMs: hold the lease (and so
    // restart anything here) only once this replica shows every decision made before the grant.
    if (lapsed) await node.waitApplied(granted.commitIndex, 10_000);
    if (bootTimeMs() < pausedUntil) return;
    holder.granted(sentAt, granted.leaseMs);
    renewInMs = granted.renewInMs;
    await fencer.feed(holder.fenceAt());
    onGranted(granted.commitIndex);
  };
  const loop = async () => {
    while (!stopped) {
      const started = performance.now();
      await renewOnce().catch((err) => log.debug("lease renewal failed", { error: String(err) }));
      // After a failure, the configured interval: the leader's advice came with a grant.
      const interval = renewInMs ?? node.fsm.settings()["nodes.heartbeatIntervalMs"];
      await new Promise((r) =>
        setTimeout(r, Math.max(50, interval - (performance.now() - started)))
      );
    }
  };
  loop();
  return { stop: () => (stopped = true), fencingLost };
}
