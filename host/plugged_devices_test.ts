/** Reading the guest's uptake of a device from QMP (./plugged_devices.ts). */
import { assertEquals } from "../core/testing/assert.ts";
import { driverOk } from "./plugged_devices.ts";

Deno.test("driverOk: DRIVER_OK as QEMU 7.2 lists it (name: description), not its neighbours", () => {
  assertEquals(
    driverOk([
      "VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready",
      "VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete",
      "VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device",
      "VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found",
    ]),
    true,
  );
  assertEquals(driverOk(["VIRTIO_CONFIG_S_DRIVER_OK"]), true, "a bare name too");
  assertEquals(
    driverOk([
      "VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device",
      "VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found",
    ]),
    false,
    "probing, not ready",
  );
  assertEquals(driverOk([]), false, "reset or never touched");
});
