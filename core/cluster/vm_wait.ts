/** Waiting for a VM to settle: `GET /vms/NAME/wait` and the lifecycle calls' `?wait=SECONDS`. */
import type { ClusterNode } from "./node.ts";
import type { OperationRecord, VmRecord, VmState } from "../fsm/mod.ts";
import { NotFoundError } from "../errors/mod.ts";
import { featureAllowed } from "../upgrade/levels.ts";
import { settleOnChange } from "./settle.ts";
import { waitForOperation } from "./operation_service.ts";

/** What a wait can ask for: a state, or the VM gone. */
export type VmWaitTarget = VmState | "deleted";

/** The longest any wait holds a request. */
export const MAX_VM_WAIT_MS = 300_000;

/** Where a wait ended: the VM's record (null: gone), and whether it got where it was asked to. */
export interface VmWaitResult {
  vm: VmRecord | null;
  /** In the wanted state (or gone, for "deleted"), or failed since the wait began. */
  settled: boolean;
}

/**
 * Resolves once the VM is in `want` or failed, or gone, or at the deadline (or abort) with
 * its current record, unsettled. Woken by applied changes, not by polling.
 * `since`: the record the caller's own change left; a failure it already showed is an old
 * one (a failed VM asked to start again), not the answer.
 */
export function waitForVm(
  node: ClusterNode,
  name: string,
  want: VmWaitTarget,
  opts: { timeoutMs: number; signal?: AbortSignal; since?: VmRecord },
): Promise<VmWaitResult> {
  const staleFailure = (vm: VmRecord) =>
    opts.since?.state === "failed" && vm.updatedAt === opts.since.updatedAt;
  const check = (): VmWaitResult => {
    const vm = node.fsm.vm(name);
    if (!vm) return { vm, settled: true };
    return { vm, settled: vm.state === want || (vm.state === "failed" && !staleFailure(vm)) };
  };
  return settleOnChange(vmChanges(node, name), check, (r) => r.settled, capped(opts));
}

/**
 * Resolves once the VM lifecycle operation `id` (core/fsm/vm_operations.ts) left "running",
 * or at the deadline (at most {@link MAX_VM_WAIT_MS}) or abort with it still running; null
 * when it is not known here.
 */
export async function waitForVmOperation(
  node: ClusterNode,
  id: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<OperationRecord | null> {
  const timeoutMs = Math.min(opts.timeoutMs, MAX_VM_WAIT_MS);
  return await waitForOperation(node, id, { ...opts, timeoutMs }).catch((err) => {
    if (err instanceof NotFoundError) return null;
    throw err;
  });
}

/** A hot-plugged device to wait for: an attached volume (by name) or a NIC (by MAC). */
export type PlugTarget = { disk: string } | { nic: string };

/** Where a hot-plug wait ended: the VM's record (null: gone), and whether it settled. */
export interface PlugWaitResult {
  vm: VmRecord | null;
  /**
   * The device is in the running QEMU (`present: true`) or out of it (`false`), or the VM
   * does not run (stopped, failed, stopping: it gets the change at its next start), or is
   * gone, or the cluster runs below the level whose hosts report plugged devices.
   */
  settled: boolean;
}

/** VM states in which a hot-plug change is settled at once: no QEMU runs (or it is going). */
const NOT_RUNNING: ReadonlySet<VmState> = new Set(["stopped", "failed", "pending", "stopping"]);

/** Whether `vm`'s change to `target` needs nothing more from its host. */
export function plugSettled(
  vm: VmRecord | null,
  target: PlugTarget,
  present: boolean,
  level: number,
): boolean {
  if (!vm || !featureAllowed("devices", level)) return true;
  if (NOT_RUNNING.has(vm.state)) return true;
  if (vm.state === "scheduled" && vm.desired !== "running") return true;
  if (vm.state !== "running") return false;
  // Never reported: its host has nothing hot-pluggable set up yet (host/vm_host.ts).
  if (!vm.plugged) return !present;
  const has = "disk" in target
    ? vm.plugged.disks.includes(target.disk)
    : vm.plugged.nics.includes(target.nic.toLowerCase());
  return has === present;
}

/**
 * Resolves once the hot-plug change to `target` on VM `name` settled ({@link plugSettled}:
 * in the running QEMU when `present`, out of it otherwise), or at the deadline (or abort)
 * unsettled. Woken by the VM's applied changes (its host's `vm.devices` reports), not by
 * polling.
 */
export function waitForPlug(
  node: ClusterNode,
  name: string,
  target: PlugTarget,
  present: boolean,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<PlugWaitResult> {
  const check = (): PlugWaitResult => {
    const vm = node.fsm.vm(name);
    return { vm, settled: plugSettled(vm, target, present, node.fsm.clusterLevel()) };
  };
  return settleOnChange(vmChanges(node, name), check, (r) => r.settled, capped(opts));
}

/** Subscribes `listener` to the applied changes of VM `name` (null: everything may have). */
function vmChanges(node: ClusterNode, name: string) {
  return (listener: () => void) =>
    node.fsm.onVmChange((changed) => {
      if (changed === null || changed === name) listener();
    });
}

/** VM waits hold a request for at most {@link MAX_VM_WAIT_MS}. */
function capped<O extends { timeoutMs: number }>(opts: O): O {
  return { ...opts, timeoutMs: Math.min(opts.timeoutMs, MAX_VM_WAIT_MS) };
}
