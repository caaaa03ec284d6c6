/**
 * Lease renewal: every host asks the leader for its lease each heartbeat
 * interval; the leader grants it only after a ReadIndex round proves it still
 * leads a quorum. The granted expiry is kept in the data dir so a restarted
 * node process knows how long the lease it held is still good.
 */
import { join } from "node:path";
import type { ClusterNode } from "./node.ts";
import { LeaseHolder, type LeaseTable } from "./lease.ts";
import { PEER_SECRET_HEADER } from "../peer/mod.ts";
import { UnavailableError } from "../errors/mod.ts";
import { log } from "../log/mod.ts";
import { writeFileDurably } from "../store/mod.ts";

const LEASE_FILE = "lease.json";

/** Leader side: grant after confirming leadership. Returns the leader's commit index for catch-up. */
export async function grantLease(
  node: ClusterNode,
  leases: LeaseTable,
  host: string,
): Promise<{ leaseMs: number; commitIndex: number }> {
  if (node.transport.blocked.has(host)) {
    throw new UnavailableError("partitioned (fault injection)");
  }
  await node.linearizableRead();
  leases.grant(host);
  return {
    leaseMs: node.fsm.settings()["ha.leaseMs"],
    commitIndex: node.status().commitIndex,
  };
}

export async function loadLease(dataDir: string): Promise<LeaseHolder> {
  try {
    const { validUntil } = JSON.parse(await Deno.readTextFile(join(dataDir, LEASE_FILE)));
    return new LeaseHolder(Number(validUntil) || 0);
  } catch {
    return new LeaseHolder(0);
  }
}

/** Host side: renews in a loop until stopped; `onGranted` sees the leader's commit index. */
export function keepLeaseRenewed(
  node: ClusterNode,
  holder: LeaseHolder,
  leases: LeaseTable,
  dataDir: string,
  onGranted: (commitIndex: number) => void,
): { stop(): void } {
  let stopped = false;
  let persisted = 0;
  const renewOnce = async (): Promise<void> => {
    const sentAt = Date.now();
    let granted: { leaseMs: number; commitIndex: number };
    if (node.isLeader()) {
      granted = await grantLease(node, leases, node.id);
    } else {
      const leader = node.leaderId();
      const url = node.leaderUrl();
      if (!leader || !url) throw new UnavailableError("no leader");
      if (node.transport.blocked.has(leader)) throw new UnavailableError("partitioned");
      const res = await fetch(`${url}/internal/lease`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          [PEER_SECRET_HEADER]: node.identity.clusterSecret,
        },
        body: JSON.stringify({ node: node.id }),
        signal: AbortSignal.timeout(2_000),
      });
      if (!res.ok) throw new UnavailableError(`lease refused: HTTP ${res.status}`);
      granted = await res.json();
    }
    const until = holder.granted(sentAt, granted.leaseMs);
    // The file only has to lag the real expiry by less than half a lease: a restarted node then
    // believes its lease ends earlier than it does (it fences sooner), never later.
    if (until - persisted > granted.leaseMs / 2) {
      await writeFileDurably(join(dataDir, LEASE_FILE), JSON.stringify({ validUntil: until }));
      persisted = until;
    }
    onGranted(granted.commitIndex);
  };
  const loop = async () => {
    while (!stopped) {
      const started = Date.now();
      await renewOnce().catch((err) => log.debug("lease renewal failed", { error: String(err) }));
      const interval = node.fsm.settings()["nodes.heartbeatIntervalMs"];
      await new Promise((r) => setTimeout(r, Math.max(50, interval - (Date.now() - started))));
    }
  };
  loop();
  return { stop: () => (stopped = true) };
}
