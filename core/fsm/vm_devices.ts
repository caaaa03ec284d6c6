/**
 * What a running VM's QEMU has plugged (level 2, core/upgrade/levels.ts): the VM's host
 * reports its attached volumes and NICs on networks as `vm.devices` whenever that set
 * changes (host/vm_host.ts), so hot-plug (./vm_disks.ts, ./vm_nics.ts) can be waited for
 * and shown. Kept in the VM's spec JSON, as `display` is; cleared when no QEMU runs.
 *
 * Below level 2 the applier refuses `vm.devices`, the outcome older programs give for a
 * command kind they do not know, so replicas agree even if one slipped past the leader's
 * gate.
 *
 * @module
 */
import { FeatureUnavailableError } from "../errors/mod.ts";
import type { Command, VmDisk, VmNic, VmPlugged, VmRecord } from "./commands.ts";
import { type Applied, applied, type Resource, type Store } from "./store.ts";
import { levelOfOp } from "../upgrade/levels.ts";
import * as clusterLevel from "./cluster_level.ts";
import * as vms from "./vms.ts";

/** States in which no QEMU runs for the VM. */
const NO_QEMU: ReadonlySet<string> = new Set(["stopped", "failed", "pending"]);

/** The same set, in a stable order (reports compare equal whatever order QEMU listed). */
export function normalPlugged(p: VmPlugged): VmPlugged {
  return {
    disks: [...new Set(p.disks)].sort(),
    nics: [...new Set(p.nics.map((m) => m.toLowerCase()))].sort(),
  };
}

/** Whether two reports name the same devices. */
export function samePlugged(a: VmPlugged | null | undefined, b: VmPlugged | null | undefined) {
  if (!a || !b) return !a && !b;
  return JSON.stringify(normalPlugged(a)) === JSON.stringify(normalPlugged(b));
}

function report(s: Store, c: Extract<Command, { op: "vm.devices" }>): Applied {
  const needs = levelOfOp(c.op);
  const level = clusterLevel.level(s);
  if (level < needs) {
    throw new FeatureUnavailableError(
      `${c.op} needs cluster level ${needs}; the cluster runs at level ${level}`,
      { op: c.op, needsLevel: needs, level },
    );
  }
  const vm = vms.get(s, c.name);
  // A report from a host the VM has left (migrated, moved) is stale: ignored.
  if (!vm || vm.node !== c.node) return applied(null, { resource: "vm", name: c.name });
  // Late for a QEMU that has since stopped (its host reported that first): nothing runs.
  if (NO_QEMU.has(vm.state)) return applied(null, { resource: "vm", name: c.name });
  const plugged = normalPlugged(c.plugged);
  if (!samePlugged(vm.plugged, plugged)) {
    vms.writeSpec(s, { ...vms.specOf(vm), plugged }, c.at);
  }
  return applied(vms.get(s, c.name)?.plugged ?? null, { resource: "vm", name: c.name });
}

/** A VM's disks and NICs as the API shows them: hot-plug state. */
export interface PluggedState {
  /** In the running QEMU (true), not (yet, or any more: false); null: no QEMU runs, or unknown. */
  plugged: boolean | null;
}

/**
 * Whether `vm`'s running QEMU has the device: null while the VM does not run, or its host
 * has not reported (below level 2 hosts never do).
 */
function pluggedIn(vm: VmRecord, has: (p: VmPlugged) => boolean): boolean | null {
  if (vm.state !== "running" || !vm.plugged) return null;
  return has(vm.plugged);
}

/** Whether the VM's QEMU has the attached volume `d` (its own disks are always there). */
export function diskPlugged(vm: VmRecord, d: VmDisk): boolean | null {
  if (d.source.kind !== "attached") return vm.state === "running" ? true : null;
  return pluggedIn(vm, (p) => p.disks.includes(d.volume));
}

/** Whether the VM's QEMU has the NIC with MAC `mac`. */
export function nicPlugged(vm: VmRecord, mac: string): boolean | null {
  return pluggedIn(vm, (p) => p.nics.includes(mac.toLowerCase()));
}

/** `v` with `plugged` on each disk and NIC when it is a VM's record; anything else as it is. */
export function viewWithPlugged<T>(v: T): T {
  const vm = v as unknown as VmRecord | null;
  if (!vm || typeof vm !== "object" || !Array.isArray(vm.disks) || typeof vm.state !== "string") {
    return v;
  }
  return withPluggedView(vm) as unknown as T;
}

/** The VM with `plugged` on each disk and NIC, as the API shows it. */
export function withPluggedView(vm: VmRecord): VmRecord {
  return {
    ...vm,
    disks: vm.disks.map((d) => ({ ...d, plugged: diskPlugged(vm, d) })),
    ...(vm.nics
      ? {
        nics: (vm.nics as VmNic[]).map((n) => ({ ...n, plugged: nicPlugged(vm, String(n.mac)) })),
      }
      : {}),
  };
}

/** Hot-plug state reports. */
export const resource: Resource<"vm.devices"> = {
  tables: [],
  appliers: { "vm.devices": report },
};
