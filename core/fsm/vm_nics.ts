/**
 * NIC hot-plug in the replicated state: a NIC added to an existing VM, or one
 * of its NICs removed. The address and MAC are decided here, while the entry
 * is applied, with the same IPAM as at create (./networks.ts), so concurrent
 * adds never share an address. The VM's host does the rest when it sees the
 * change (host/vm_host.ts): a running guest gets the device through QMP, a
 * stopped one at its next start.
 *
 * Each NIC keeps its number ({@link VmNic.index}) for life: its logical port,
 * tap and QEMU device are named by it, so removing NIC 0 leaves NIC 1 what it
 * was. A new NIC takes the lowest free number; NIC `n` sits on PCIe root port
 * `n` in the guest, so the numbers stay below {@link MAX_NICS}.
 *
 * A VM without network NICs runs with one user-mode NIC instead (see
 * host/vm_host.ts). Its first network NIC, and the removal of its last one,
 * would change which devices its QEMU has, which only a restart does: on a
 * VM whose QEMU may be running, both are refused.
 *
 * @module
 */
import { ConflictError, NotFoundError, NovaError, ValidationError } from "../errors/mod.ts";
import { parseMac } from "../network/mod.ts";
import { type Command, nicIndex, type VmNic, type VmRecord } from "./commands.ts";
import * as networks from "./networks.ts";
import { type Applied, applied, type Resource, type Store } from "./store.ts";
import * as vms from "./vms.ts";

/** NICs on one VM: one PCIe root port each (host/kvm/qemu.ts). */
export const MAX_NICS = 8;

/** States in which no QEMU runs for the VM, so its devices may change freely. */
const AT_REST = new Set(["stopped", "failed", "pending"]);

function vmFor(s: Store, name: string): VmRecord {
  const vm = vms.get(s, name);
  if (!vm) throw new NotFoundError("vm", name);
  if (vm.desired === "deleted") throw new ConflictError(`VM "${name}" is being deleted`);
  if (vm.migration) {
    // The destination's QEMU was started with the NICs the VM had then: they must not change.
    throw new ConflictError(
      `VM "${name}" is migrating (operation ${vm.migration.opId}); change its NICs after that`,
    );
  }
  return vm;
}

function atRest(vm: VmRecord): boolean {
  return AT_REST.has(vm.state) || (vm.state === "scheduled" && vm.desired !== "running");
}

function add(s: Store, c: Extract<Command, { op: "vm.nic.add" }>): Applied {
  const vm = vmFor(s, c.name);
  if (vm.template) throw new ConflictError(`"${vm.name}" is a template; templates are immutable`);
  const nics = (vm.nics ?? []) as VmNic[];
  if (!nics.length && !atRest(vm)) {
    throw new ConflictError(
      `VM "${vm.name}" runs with user-mode networking (it has no NIC on a network); stop it to add its first network NIC`,
      { field: "nic" },
    );
  }
  const used = new Set(nics.map(nicIndex));
  let index = 0;
  while (used.has(index)) index++;
  if (index >= MAX_NICS) {
    throw ValidationError.field("nic", `VM "${vm.name}" has ${MAX_NICS} NICs, the most it can`);
  }
  const nic = networks.attachNic(s, vm.name, index, c.nic, "nic");
  vms.writeSpec(s, { ...vms.specOf(vm), nics: [...nics, nic] }, c.at);
  return applied(nic, { resource: "vm", name: vm.name });
}

/** The NIC `selector` names: its index (`1`) or its MAC (any case, `:` or `-`). */
export function findNic(nics: VmNic[], selector: string, vm: string): VmNic {
  const text = selector.trim();
  let found: VmNic | undefined;
  if (/^\d{1,3}$/.test(text)) {
    found = nics.find((n, i) => nicIndex(n, i) === Number(text));
  } else {
    const mac = parseMac(text, "nic");
    found = nics.find((n) => n.mac === mac);
  }
  if (!found) {
    const have = nics.map((n, i) => `${nicIndex(n, i)} (${n.mac})`).join(", ") || "none";
    throw new NovaError("not_found", `nic: VM "${vm}" has no NIC ${text} (its NICs: ${have})`, {
      field: "nic",
    });
  }
  return found;
}

function remove(s: Store, c: Extract<Command, { op: "vm.nic.remove" }>): Applied {
  const vm = vmFor(s, c.name);
  const nics = (vm.nics ?? []) as VmNic[];
  const nic = findNic(nics, c.nic, vm.name);
  if (nics.length === 1 && !atRest(vm)) {
    throw new ConflictError(
      `NIC ${nic.mac} is the last network NIC of VM "${vm.name}", which may be running; stop it first (without network NICs it boots with user-mode networking)`,
      { field: "nic" },
    );
  }
  const index = nicIndex(nic, nics.indexOf(nic));
  networks.detachNic(s, vm.name, index);
  // Earlier NICs without a recorded index keep the one their position gave them.
  const kept = nics.map((n, i) => ({ ...n, index: nicIndex(n, i) })).filter((n) =>
    n.index !== index
  );
  vms.writeSpec(s, { ...vms.specOf(vm), nics: kept }, c.at);
  return applied({ ...nic, index }, { resource: "vm", name: vm.name });
}

/** NIC hot-plug: no tables of its own (NICs live in the VM's spec and in network_ports). */
export const resource: Resource<"vm.nic.add" | "vm.nic.remove"> = {
  tables: [],
  appliers: { "vm.nic.add": add, "vm.nic.remove": remove },
};
