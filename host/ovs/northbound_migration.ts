/**
 * Which hosts may bind a NIC's logical port, derived from where its VM is
 * placed and whether it is migrating (core/fsm/vms.ts: `node` and
 * `migration`), for the leader's northbound pass (./northbound.ts).
 *
 * - Placed on a host: `options:requested-chassis=HOST`. Only that host's
 *   ovn-controller claims the port, even while another host still has a tap
 *   with the port's `iface-id` (a migration's source before it retires, a
 *   host cut off while HA restarted its VM elsewhere): no two chassis fight
 *   over the binding.
 * - Migrating: `requested-chassis=SRC,DST` and `activation-strategy=rarp`,
 *   OVN's multi-chassis binding (OVN ≥ 22.09). The destination's tap, plugged
 *   before its QEMU starts waiting for the stream, is bound as an additional
 *   chassis at once, so its flows are ready before the switchover; OVN sends
 *   the port's traffic to both hosts but keeps the destination's side blocked
 *   until QEMU there announces the guest with RARP (QEMU does that itself when
 *   the incoming migration completes, see host/migrator.ts). Then traffic
 *   flows there without waiting for anything else.
 * - Once the move is committed the VM is placed on the destination and the
 *   port goes back to one chassis, the destination; a migration that failed
 *   clears the mark and leaves it on the source.
 *
 * Chassis are named after their nodes (host/ovs/ovn.ts sets `system-id`).
 *
 * @module
 */
import type { VmRecord } from "../../core/fsm/mod.ts";
import type { NicPort } from "./northbound.ts";

/** Where a NIC's VM is, as far as its port's binding goes. */
export interface PortPlacement {
  /** The host the VM is placed on; null while unplaced. */
  node: string | null;
  /** The destination of the migration under way, if any. */
  migratingTo: string | null;
}

/** The options of a NIC's logical port that say which chassis may bind it. */
export function bindingOptions(p: PortPlacement | undefined): Record<string, string> {
  if (!p?.node) return {};
  if (p.migratingTo && p.migratingTo !== p.node) {
    return {
      "requested-chassis": `${p.node},${p.migratingTo}`,
      "activation-strategy": "rarp",
    };
  }
  return { "requested-chassis": p.node };
}

/** What {@link placedPorts} reads of the replicated state. */
export interface PlacementReads {
  networkPorts(network: string): Omit<NicPort, "placement">[];
  vm(name: string): Pick<VmRecord, "node" | "migration"> | null;
}

/** The NICs on `network`, each with where its VM is placed (and migrating to). */
export function placedPorts(reads: PlacementReads, network: string): NicPort[] {
  const placements = new Map<string, PortPlacement>();
  return reads.networkPorts(network).map((p) => {
    let placement = placements.get(p.vm);
    if (!placement) {
      const vm = reads.vm(p.vm);
      placement = { node: vm?.node ?? null, migratingTo: vm?.migration?.to ?? null };
      placements.set(p.vm, placement);
    }
    return { ...p, placement };
  });
}
