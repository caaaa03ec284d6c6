/**
 * The state machine's own check of a placement the leader decided: does the
 * VM still fit on its chosen host, by capacity (with overcommit), strict
 * placement groups and label constraints, in the state as it is when the
 * decision is applied?
 *
 * The leader decides optimistically, against its applied state plus the
 * decisions it has proposed but not yet seen applied (core/cluster/planner.ts),
 * and many decisions travel in one entry. Anything it could not see (a stale
 * leader, a decision of another code path) is caught here, deterministically
 * on every replica: the check reads only replicated state. Host liveness and
 * cordons are the leader's concern (not replicated as facts), so every host
 * counts as ready here.
 *
 * The check keeps a {@link PlacementIndex} over the state as a store cache:
 * built on first use, told which VMs changed since (each re-read when the next
 * check runs), rebuilt when hosts, groups or the configuration change, and
 * dropped with every other cache when a transaction rolls back.
 *
 * @module
 */
import { PlacementIndex } from "../scheduler/placement_index.ts";
import type { HostView, PlacementGroup, PlacementRequest, PoolRule } from "../scheduler/types.ts";
import type { Changed } from "./store.ts";
import type { CacheKey, Store } from "./store.ts";
import type { VmSpec } from "./commands.ts";
import * as nodes from "./nodes.ts";
import * as vms from "./vms.ts";
import * as groups from "./groups.ts";
import * as pools from "./pools.ts";
import * as config from "./config.ts";

interface Ledger {
  index: PlacementIndex | null;
  /** VMs changed since the index last looked at them. */
  stale: Set<string>;
}

const LEDGER: CacheKey<Ledger> = { init: () => ({ index: null, stale: new Set() }) };

/** What a change means for the ledger: re-read one VM, or rebuild. */
export function noteChange(s: Store, changed: Changed): void {
  const ledger = s.cache(LEDGER);
  if (!ledger.index) return;
  if (changed.resource === "vm" && changed.name !== undefined) ledger.stale.add(changed.name);
  else if (REBUILD_ON.has(changed.resource)) ledger.index = null;
}

/** Changes that alter hosts, capacity rules or groups (a VM without a name: many VMs). */
const REBUILD_ON: ReadonlySet<Changed["resource"]> = new Set([
  "cluster",
  "node",
  "config",
  "group",
  "vm",
]);

/**
 * Why `vm` (with its `node` chosen) no longer fits there, or null when it does.
 * A VM that fits is held in the ledger at once, so the next check in the same
 * entry sees it.
 */
export function checkAndHold(s: Store, vm: VmSpec): string | null {
  if (!vm.node) return "no host chosen";
  const index = indexOf(s);
  const req = requestOf(s, vm);
  const decided = index.place({ ...req, node: vm.node });
  if (!decided.ok) return decided.reasons[vm.node] ?? "does not fit";
  index.commit(vm.name, vm.node, req);
  return null;
}

function requestOf(s: Store, vm: VmSpec): PlacementRequest {
  return placementRequestOfSpec(
    vm,
    vm.group ? groups.get(s, vm.group) ?? undefined : undefined,
    pools.rulesFor(s, vm.disks, false),
  );
}

/**
 * What `vm` asks of a host, as the scheduler counts a placed VM: the leader decides
 * with the same request the state machine checks, or the two would disagree.
 */
export function placementRequestOfSpec(
  vm: VmSpec,
  group: PlacementGroup | undefined,
  poolRules: readonly PoolRule[] = [],
): PlacementRequest {
  return {
    ...(poolRules.length ? { pools: poolRules } : {}),
    name: vm.name,
    cpus: vm.template ? 0 : vm.cpus,
    memoryMiB: vm.template ? 0 : vm.memoryMiB,
    diskBytes: vm.disks.reduce((sum, d) => sum + d.sizeBytes, 0),
    constraints: vm.constraints,
    group,
  };
}

function indexOf(s: Store): PlacementIndex {
  const ledger = s.cache(LEDGER);
  if (!ledger.index) {
    ledger.index = new PlacementIndex(readyHosts(s), vms.all(s), config.settings(s));
    ledger.stale.clear();
  }
  for (const name of ledger.stale) ledger.index.refresh(name, vms.get(s, name));
  ledger.stale.clear();
  return ledger.index;
}

function readyHosts(s: Store): HostView[] {
  return nodes.all(s).map((node) => ({ node, state: "ready", schedulable: true }));
}
