/**
 * Disk hot-plug in the replicated state: a volume (./volumes.ts) attached to
 * a VM, or detached from it. The VM's host does the rest when it sees the
 * change (host/disk_hotplug.ts): a running guest gets or loses the device
 * through QMP, a stopped one has it at its next start.
 *
 * An attached volume is the VM's disk `vd<port>` on PCIe root port `port`
 * (the lowest free one below {@link MAX_ATTACHED}), so a migration's
 * destination, which starts QEMU from the record, has it in the same slot.
 *
 * Refused: attaching to a template or a migrating VM, a volume already
 * attached, a host-local volume to a VM on another host; detaching the root
 * disk (the VM's own; of a running VM: "the root disk of a running VM").
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import type { Command, VmDisk, VmRecord } from "./commands.ts";
import { type Applied, applied, type Resource, type Store } from "./store.ts";
import * as vms from "./vms.ts";
import * as volumes from "./volumes.ts";

/** Attached volumes per VM: one PCIe root port each (host/kvm/qemu.ts DISK_PORTS). */
export const MAX_ATTACHED = 8;

/** States in which no QEMU runs for the VM. */
const AT_REST = new Set(["stopped", "failed", "pending"]);

function atRest(vm: VmRecord): boolean {
  return AT_REST.has(vm.state) || (vm.state === "scheduled" && vm.desired !== "running");
}

function vmFor(s: Store, name: string): VmRecord {
  const vm = vms.get(s, name);
  if (!vm) throw new NotFoundError("vm", name);
  if (vm.desired === "deleted") throw new ConflictError(`VM "${name}" is being deleted`);
  if (vm.migration) {
    throw new ConflictError(
      `VM "${name}" is migrating (operation ${vm.migration.opId}); change its disks after that`,
    );
  }
  return vm;
}

/** The QEMU id of the disk on attach port `port`. */
export function attachedDiskId(port: number): string {
  return `vd${port}`;
}

function attach(s: Store, c: Extract<Command, { op: "vm.disk.attach" }>): Applied {
  const vm = vmFor(s, c.name);
  if (vm.template) throw new ConflictError(`"${vm.name}" is a template; templates are immutable`);
  const v = volumes.get(s, c.volume);
  if (!v) throw ValidationError.field("volume", `no volume named "${c.volume}"`);
  if (v.attachedTo === vm.name) {
    return applied(vm.disks.find((d) => d.source.kind === "attached" && d.volume === v.name));
  }
  if (v.attachedTo) {
    throw new ConflictError(`volume: "${v.name}" is attached to VM "${v.attachedTo}"`, {
      field: "volume",
      vm: v.attachedTo,
    });
  }
  if (v.node !== null && vm.node !== v.node) {
    throw new ConflictError(
      `volume: "${v.name}" is in pool "${v.pool}" on ${v.node}, and VM "${vm.name}" is ${
        vm.node ? `on ${vm.node}` : "not placed"
      }; a host-local volume attaches only to a VM on its host`,
      { field: "volume", node: v.node },
    );
  }
  const used = new Set(vm.disks.map((d) => d.port).filter((p) => p !== undefined));
  let port = 0;
  while (used.has(port)) port++;
  if (port >= MAX_ATTACHED) {
    throw ValidationError.field(
      "volume",
      `VM "${vm.name}" has ${MAX_ATTACHED} volumes attached, the most it can`,
    );
  }
  const disk: VmDisk = {
    id: attachedDiskId(port),
    pool: v.pool,
    volume: v.name,
    sizeBytes: v.sizeBytes,
    source: { kind: "attached" },
    port,
  };
  vms.writeSpec(s, { ...vms.specOf(vm), disks: [...vm.disks, disk] }, c.at);
  volumes.setAttached(s, v.name, vm.name);
  return applied(disk, { resource: "vm", name: vm.name }, { resource: "volume", name: v.name });
}

function detach(s: Store, c: Extract<Command, { op: "vm.disk.detach" }>): Applied {
  const vm = vmFor(s, c.name);
  const i = vm.disks.findIndex((d) =>
    d.id === c.disk || (d.source.kind === "attached" && d.volume === c.disk)
  );
  if (i < 0) throw new NotFoundError("disk", `${c.name}/${c.disk}`);
  const disk = vm.disks[i];
  if (i === 0 || disk.source.kind !== "attached") {
    if (!atRest(vm)) {
      throw new ConflictError(
        `disk: "${c.disk}" is the root disk of running VM "${vm.name}"; it cannot be detached`,
        { field: "disk" },
      );
    }
    throw new ConflictError(
      `disk: "${c.disk}" is VM "${vm.name}"'s own disk, not an attached volume; only volumes detach`,
      { field: "disk" },
    );
  }
  vms.writeSpec(s, { ...vms.specOf(vm), disks: vm.disks.filter((_, j) => j !== i) }, c.at);
  volumes.setAttached(s, disk.volume, null);
  return applied(disk, { resource: "vm", name: vm.name }, {
    resource: "volume",
    name: disk.volume,
  });
}

/** Grows the attached VM's disk record along with its volume. */
function resizeVolume(s: Store, c: Extract<Command, { op: "volume.resize" }>): Applied {
  const vmsChanged: Applied["changed"] = [];
  const out = volumes.resize(s, c, (vmName, sizeBytes) => {
    const vm = vms.get(s, vmName);
    if (!vm) return;
    const disks = vm.disks.map((d) =>
      d.source.kind === "attached" && d.volume === c.name ? { ...d, sizeBytes } : d
    );
    vms.writeSpec(s, { ...vms.specOf(vm), disks }, c.at);
    vmsChanged.push({ resource: "vm", name: vmName });
  });
  return { value: out.value, changed: [...out.changed, ...vmsChanged] };
}

/** Volumes attached to and detached from VMs, and resizes (which write both). */
export const resource: Resource<"vm.disk.attach" | "vm.disk.detach" | "volume.resize"> = {
  tables: [],
  appliers: {
    "vm.disk.attach": attach,
    "vm.disk.detach": detach,
    "volume.resize": resizeVolume,
  },
};
