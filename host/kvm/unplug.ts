/**
 * Hot-unplug of a QEMU device, shared by NICs (host/nic_hotplug.ts) and disks
 * (host/disk_hotplug.ts): `device_del` asks the guest to let go, and the device
 * is gone only once QEMU emits `DEVICE_DELETED` — the guest may take its time,
 * or never answer.
 *
 * @module
 */
import { TimeoutError } from "../../core/errors/mod.ts";
import { deviceDel, qomList } from "./commands.ts";
import type { QemuVm } from "./qemu.ts";
import { QmpError } from "./qmp.ts";

/** How long a guest gets to release a device before a round gives up (the next one retries). */
export const UNPLUG_TIMEOUT_MS = 20_000;

/** Whether QEMU has device `id` (`/machine/peripheral`). */
export async function devicePresent(qemu: QemuVm, id: string): Promise<boolean> {
  return (await qomList(qemu.qmp, "/machine/peripheral")).includes(id);
}

/**
 * Unplugs device `dev` and waits for `DEVICE_DELETED` (at most `timeoutMs`; a TimeoutError,
 * naming `what`, leaves the request pending, and a later call waits again). Returns
 * `"not-found"` when QEMU no longer knew the device at the request, else `"gone"` (also when
 * it was never there).
 */
export async function unplugDevice(
  qemu: QemuVm,
  dev: string,
  what: string,
  timeoutMs = UNPLUG_TIMEOUT_MS,
): Promise<"gone" | "not-found"> {
  if (!(await devicePresent(qemu, dev))) return "gone";
  const deleted = qemu.qmp.waitForEvent("DEVICE_DELETED", {
    timeoutMs,
    match: (e) => e.data?.device === dev,
  });
  deleted.catch(() => {});
  try {
    await deviceDel(qemu.qmp, dev);
  } catch (err) {
    // "already in the process of unplug": an earlier request is pending; wait for it.
    if (!(err instanceof QmpError && /unplug/i.test(err.desc))) {
      if (err instanceof QmpError && err.errorClass === "DeviceNotFound") return "not-found";
      throw err;
    }
  }
  try {
    await deleted;
  } catch (err) {
    if (!(err instanceof TimeoutError)) throw err;
    // The event may have come between our check and the subscription: look again.
    if (await devicePresent(qemu, dev)) {
      throw new TimeoutError(
        `the guest did not release ${what} (${dev}) within ${timeoutMs} ms; retrying later`,
      );
    }
  }
  return "gone";
}
