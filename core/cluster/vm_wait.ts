/** Waiting for a VM to settle: `GET /vms/NAME/wait` and the lifecycle calls' `?wait=SECONDS`. */
import type { ClusterNode } from "./node.ts";
import type { OperationRecord, VmRecord, VmState } from "../fsm/mod.ts";

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
  const now = check();
  if (now.settled) return Promise.resolve(now);
  return new Promise((resolve) => {
    const done = (r: VmWaitResult) => {
      off();
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      resolve(r);
    };
    const off = node.fsm.onVmChange((changed) => {
      if (changed !== null && changed !== name) return;
      const r = check();
      if (r.settled) done(r);
    });
    const timeoutMs = Math.min(opts.timeoutMs, MAX_VM_WAIT_MS);
    const timer = setTimeout(() => done(check()), timeoutMs);
    const onAbort = () => done(check());
    opts.signal?.addEventListener("abort", onAbort);
  });
}

/**
 * Resolves once the VM lifecycle operation `id` (core/fsm/vm_operations.ts) left "running",
 * or at the deadline (or abort) with it still running; null when it is not known here.
 * Woken by the operation's changes (they apply with its VM's), not by polling.
 */
export function waitForVmOperation(
  node: ClusterNode,
  id: string,
  opts: { timeoutMs: number; signal?: AbortSignal },
): Promise<OperationRecord | null> {
  const check = () => node.fsm.operation(id);
  const now = check();
  if (!now || now.state !== "running") return Promise.resolve(now);
  return new Promise((resolve) => {
    const done = (r: OperationRecord | null) => {
      off();
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      resolve(r);
    };
    const off = node.fsm.onChange((c) => {
      if (c !== null && !(c.resource === "operation" && c.name === id)) return;
      const op = check();
      if (!op || op.state !== "running") done(op);
    });
    const timer = setTimeout(() => done(check()), Math.min(opts.timeoutMs, MAX_VM_WAIT_MS));
    const onAbort = () => done(check());
    opts.signal?.addEventListener("abort", onAbort);
  });
}
