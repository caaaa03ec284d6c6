/**
 * Plans: placements the leader decided optimistically, many VMs per entry
 * (core/cluster/planner.ts). Each create is checked again here against the
 * state as it is now (./placement_check.ts) and applied or refused on its own:
 * one VM that no longer fits never costs the others in its batch their place.
 *
 * @module
 */
import { ConflictError, NovaError } from "../errors/mod.ts";
import type { Command, PlannedCreate, PlannedCreateResult, VmRecord } from "./commands.ts";
import * as vms from "./vms.ts";
import * as vmOps from "./vm_operations.ts";
import { checkAndHold, noteChange } from "./placement_check.ts";
import type { Applied, Changed, Resource, Store } from "./store.ts";

/** Refused because the chosen host no longer fits the VM: the leader may decide again. */
export class StalePlacementError extends ConflictError {}

function applyPlan(s: Store, c: Extract<Command, { op: "plan.apply" }>): Applied {
  const results: PlannedCreateResult[] = [];
  const changed: Changed[] = [];
  for (const [i, item] of c.creates.entries()) {
    s.db.exec("SAVEPOINT planned");
    try {
      const vm = createChecked(s, item, c.at);
      // Followed only when it is to start: a VM created stopped is there once created.
      const made = item.vm.desired === "running"
        ? vmOps.begin(s, {
          name: vm.name,
          vm,
          kind: "create",
          track: item.track,
          id: vmOps.operationIdOf(s.entryIndex, i),
          by: item.by,
          at: c.at,
        })
        : null;
      s.db.exec("RELEASE planned");
      results.push(
        made?.operation ? { ok: true, vm, operation: made.operation } : { ok: true, vm },
      );
      changed.push({ resource: "vm", name: vm.name }, ...(made?.changed ?? []));
    } catch (err) {
      s.db.exec("ROLLBACK TO planned; RELEASE planned");
      // A cache may hold what the refused create wrote (its VM, as read back).
      s.dropCaches();
      // What the check held for it is not in the state: the ledger reads the VM again.
      noteChange(s, { resource: "vm", name: item.vm.name });
      if (!(err instanceof NovaError)) throw err;
      results.push({
        ok: false,
        error: err.toJSON().error,
        stale: err instanceof StalePlacementError,
      });
    }
  }
  return { value: { results }, changed };
}

function createChecked(s: Store, item: PlannedCreate, at: number): VmRecord {
  const { vm } = item;
  vms.assertCreatable(s, vm);
  const misfit = checkAndHold(s, vm);
  if (misfit) {
    throw new StalePlacementError(`${vm.name} no longer fits on ${vm.node}: ${misfit}`, {
      node: vm.node,
      reason: misfit,
    });
  }
  return vms.insert(s, vm, at, true).value as VmRecord;
}

/** Plans of placements. */
export const resource: Resource<"plan.apply"> = {
  tables: [],
  appliers: { "plan.apply": applyPlan },
};
