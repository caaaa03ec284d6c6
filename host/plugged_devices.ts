/**
 * What a running QEMU has plugged, as its host reports it (`vm.devices`,
 * core/fsm/vm_devices.ts): the attached volumes and NICs on networks its
 * launch spec lists (kept current by ./disk_hotplug.ts and ./nic_hotplug.ts)
 * whose guest driver has taken the device.
 *
 * QEMU has a hot-added device as soon as `device_add` returns, but the guest
 * sees it only once its PCIe hot-plug handling probed it and the virtio
 * driver set it up: the driver then sets DRIVER_OK in the device's status,
 * which QMP `x-query-virtio-status` shows. So "plugged" means the guest has
 * the device (its `/dev/vdX` or its interface exists), which is what a
 * client waiting for a hot-plug wants to know. The command is QEMU's
 * unstable (`x-`) interface, present since 7.2; a QEMU without it counts a
 * device as plugged once QEMU has it.
 *
 * A device seen ready is remembered for the QEMU's life, so a round asks
 * QEMU only about devices not yet ready (none, once a guest has them all).
 * A guest that resets a device later (a reboot) is not noticed.
 *
 * @module
 */
import type { VmPlugged, VmRecord } from "../core/fsm/mod.ts";
import { pluggedDiskName } from "./disk_hotplug.ts";
import type { QemuVm } from "./kvm/mod.ts";
import { QmpError } from "./kvm/qmp.ts";

/**
 * Whether a device status, as `x-query-virtio-status` lists it, has DRIVER_OK. QEMU names each
 * bit with a description: `"VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready"`.
 */
export function driverOk(statuses: string[]): boolean {
  return statuses.some((s) => /^VIRTIO_CONFIG_S_DRIVER_OK\b/.test(s));
}

/** Whether the guest's driver set virtio device `dev` up; null: QEMU cannot say. */
export async function guestDriverReady(qemu: QemuVm, dev: string): Promise<boolean | null> {
  try {
    const r = await qemu.qmp.execute<{ status?: { statuses?: string[] } }>(
      "x-query-virtio-status",
      { path: `/machine/peripheral/${dev}/virtio-backend` },
    );
    return r.status?.statuses ? driverOk(r.status.statuses) : null;
  } catch (err) {
    if (err instanceof QmpError && err.errorClass === "CommandNotFound") return null;
    // Not (or no longer) a virtio device there: not plugged.
    if (err instanceof QmpError) return false;
    throw err;
  }
}

/** Per QEMU: the devices its guest has set up (never asked again). */
export class PluggedDevices {
  readonly #ready = new Map<string, { pid: number; devs: Set<string> }>();

  /** What `qemu` (running `vm`) has plugged that its guest has set up. */
  async of(vm: VmRecord, qemu: QemuVm): Promise<VmPlugged> {
    let memo = this.#ready.get(vm.name);
    if (!memo || memo.pid !== qemu.pid) {
      memo = { pid: qemu.pid, devs: new Set() };
      this.#ready.set(vm.name, memo);
    }
    const ready = async (dev: string) => {
      if (memo.devs.has(dev)) return true;
      const r = await guestDriverReady(qemu, dev);
      if (r !== false) memo.devs.add(dev);
      return r !== false;
    };
    const disks: string[] = [];
    const attached = qemu.spec.disks.filter((d) => d.port !== undefined);
    for (const d of attached) {
      const name = pluggedDiskName(d, vm);
      if (name !== null && await ready(`${d.id}-dev`)) disks.push(name);
    }
    const nics: string[] = [];
    for (const n of qemu.spec.nics.filter((n) => n.tap !== undefined)) {
      if (await ready(`${n.id}-dev`)) nics.push(n.mac.toLowerCase());
    }
    // Devices gone from the spec are forgotten: a device added again is asked about anew.
    const live = new Set([...attached, ...qemu.spec.nics].map((d) => `${d.id}-dev`));
    for (const dev of memo.devs) if (!live.has(dev)) memo.devs.delete(dev);
    return { disks, nics };
  }

  /** Whether some hot-pluggable device of `qemu` is in QEMU but not yet set up by its guest. */
  pending(vm: VmRecord, qemu: QemuVm): boolean {
    const memo = this.#ready.get(vm.name);
    const devs = [
      ...qemu.spec.disks.filter((d) => d.port !== undefined),
      ...qemu.spec.nics.filter((n) => n.tap !== undefined),
    ].map((d) => `${d.id}-dev`);
    return devs.some((d) => !memo || memo.pid !== qemu.pid || !memo.devs.has(d));
  }

  forget(vm: string): void {
    this.#ready.delete(vm);
  }
}
