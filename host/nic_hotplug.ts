/**
 * NIC hot-plug on a running VM: the host's reconcile loop (./vm_host.ts)
 * compares the NICs the VM's record lists with those its QEMU has (its
 * launch spec, kept current here) and adds or removes the difference.
 *
 * - Add: the host plugs the NIC's tap into the integration bridge first
 *   (host/ovs/nic.ts), then QMP `netdev_add` (a tap backend on that tap) and
 *   `device_add` of a virtio-net NIC with the NIC's MAC on the NIC's own PCIe
 *   root port (host/kvm/qemu.ts).
 * - Remove: `device_del`, then wait for `DEVICE_DELETED` (the guest has let
 *   go of the device; it may take its time), then `netdev_del`, then the tap
 *   goes.
 *
 * Each step is safe to repeat: a retry after a failure, or after the node
 * restarted half-way, finds what is already done and goes on from there.
 *
 * @module
 */
import { UnavailableError } from "../core/errors/mod.ts";
import { nicIndex, type VmRecord } from "../core/fsm/mod.ts";
import { log } from "../core/log/mod.ts";
import { deviceAddVirtioNet, netdevAddTap, netdevDel } from "./kvm/commands.ts";
import { devicePresent, UNPLUG_TIMEOUT_MS, unplugDevice } from "./kvm/unplug.ts";
import { nicPortId, type NicSpec, type QemuVm } from "./kvm/mod.ts";
import { QmpError } from "./kvm/qmp.ts";
import type { HostNics } from "./ovs/host_network.ts";

/** A NIC as the record wants it on the guest: its number (port) and MAC. */
export interface WantedNic {
  index: number;
  mac: string;
}

/** What differs between the NICs a QEMU has and those its VM's record lists. */
export interface NicChanges {
  add: WantedNic[];
  remove: NicSpec[];
}

/**
 * The NICs to add and remove so that `current` (QEMU's) matches `wanted`; a NIC whose MAC
 * changed under the same number is removed and added again. Null when QEMU runs with its
 * user-mode NIC: that needs a restart, not a hot-plug (core/fsm/vm_nics.ts refuses it).
 */
export function nicChanges(current: NicSpec[], wanted: WantedNic[]): NicChanges | null {
  if (current.some((n) => n.tap === undefined || n.port === undefined)) {
    // Without ports (user-mode, or launched before hot-plug): nothing can be plugged there.
    const macs = (list: { mac: string }[]) => list.map((n) => n.mac.toLowerCase()).sort().join();
    const same = macs(current.filter((n) => n.tap !== undefined)) === macs(wanted);
    return same ? { add: [], remove: [] } : null;
  }
  const key = (port: number, mac: string) => `${port}|${mac.toLowerCase()}`;
  const have = new Set(current.map((n) => key(n.port!, n.mac)));
  const want = new Set(wanted.map((w) => key(w.index, w.mac)));
  return {
    add: wanted.filter((w) => !have.has(key(w.index, w.mac))),
    remove: current.filter((n) => !want.has(key(n.port!, n.mac))),
  };
}

/** The NICs `vm`'s record lists, with their numbers. */
export function wantedNics(vm: VmRecord): WantedNic[] {
  return (vm.nics ?? []).map((n, i) => ({ index: nicIndex(n, i), mac: String(n.mac) }));
}

/**
 * QEMU runs as its own user by then (host/kvm/confine.ts), so it opens /dev/net/tun as that
 * user: say what the host needs instead of passing on QEMU's bare "Permission denied".
 */
export function explainTapOpen(err: unknown): unknown {
  if (!(err instanceof QmpError && /\/dev\/net\/tun.*permission denied/i.test(err.desc))) {
    return err;
  }
  return new UnavailableError(
    "NIC hot-plug: QEMU, running as its own user, cannot open /dev/net/tun; make it mode 0666 " +
      "as Debian's udev rule does (scripts/setup.sh does it): " + err.desc,
  );
}

/** Hot-adds the NIC `spec` (its tap already plugged) to the running `qemu`. */
export async function hotAddNic(qemu: QemuVm, spec: NicSpec): Promise<void> {
  const dev = `${spec.id}-dev`;
  if (await devicePresent(qemu, dev)) return; // added before a restart
  try {
    await netdevAddTap(qemu.qmp, spec.id, spec.tap!);
  } catch (err) {
    // Left by an add that failed after it: the backend is there, on the same tap.
    if (!(err instanceof QmpError && /duplicate/i.test(err.desc))) throw explainTapOpen(err);
  }
  try {
    await deviceAddVirtioNet(qemu.qmp, dev, spec.id, spec.mac, nicPortId(spec.port!));
  } catch (err) {
    await netdevDel(qemu.qmp, spec.id).catch(() => {});
    throw err;
  }
}

/**
 * Hot-removes the NIC `spec` from the running `qemu`: asks the guest to let go, waits for
 * `DEVICE_DELETED` (at most `timeoutMs`; a TimeoutError leaves the request pending, and a
 * later call waits again), then drops the backend.
 */
export async function hotRemoveNic(
  qemu: QemuVm,
  spec: NicSpec,
  timeoutMs = UNPLUG_TIMEOUT_MS,
): Promise<void> {
  const unplugged = await unplugDevice(qemu, `${spec.id}-dev`, `NIC ${spec.mac}`, timeoutMs);
  if (unplugged === "not-found") return;
  await netdevDel(qemu.qmp, spec.id).catch((err) => {
    // Already gone (a retry after the backend was dropped).
    if (!(err instanceof QmpError)) throw err;
  });
}

/**
 * Makes the running `qemu`'s NICs those `vm`'s record lists: removals first (they free
 * ports), then additions. The launch spec is updated and saved (`save`) after each step, so
 * a restarted node re-adopts QEMU knowing its devices. Returns whether anything changed.
 */
export async function syncNics(
  vm: VmRecord,
  qemu: QemuVm,
  nics: HostNics,
  save: (qemu: QemuVm) => Promise<void>,
): Promise<boolean> {
  const changes = nicChanges(qemu.spec.nics, wantedNics(vm));
  if (!changes) {
    log.warn("NICs differ from the record, but QEMU runs with user-mode networking", {
      vm: vm.name,
    });
    return false;
  }
  for (const old of changes.remove) {
    const t0 = performance.now();
    await hotRemoveNic(qemu, old);
    await nics.unplugNic(vm, old.port!);
    qemu.spec.nics = qemu.spec.nics.filter((n) => n !== old);
    await save(qemu);
    log.info("NIC hot-unplugged", {
      vm: vm.name,
      nic: old.port,
      mac: old.mac,
      ms: Math.round(performance.now() - t0),
    });
  }
  for (const w of changes.add) {
    const t0 = performance.now();
    const spec = await nics.plugNic(vm, w.index);
    try {
      await hotAddNic(qemu, spec);
    } catch (err) {
      await nics.unplugNic(vm, w.index).catch(() => {});
      throw err;
    }
    qemu.spec.nics = [...qemu.spec.nics, spec].sort((a, b) => a.port! - b.port!);
    await save(qemu);
    log.info("NIC hot-plugged", {
      vm: vm.name,
      nic: w.index,
      mac: w.mac,
      ms: Math.round(performance.now() - t0),
    });
  }
  return changes.add.length + changes.remove.length > 0;
}
