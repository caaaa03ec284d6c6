import { assert, assertEquals, assertRejects } from "../core/testing/assert.ts";
import { TimeoutError, UnavailableError } from "../core/errors/mod.ts";
import type { NicSpec, QemuVm } from "./kvm/mod.ts";
import { QmpError } from "./kvm/qmp.ts";
import { explainTapOpen, hotAddNic, hotRemoveNic, nicChanges } from "./nic_hotplug.ts";

const tap = (port: number, mac: string): NicSpec => ({
  id: `net${port}`,
  mac,
  tap: `ntabc${port}`,
  port,
});

Deno.test("NIC changes: added and removed by number and MAC; user-mode NICs are left alone", () => {
  const current = [tap(0, "02:00:00:00:00:01"), tap(1, "02:00:00:00:00:02")];
  assertEquals(
    nicChanges(current, [{ index: 0, mac: "02:00:00:00:00:01" }, {
      index: 1,
      mac: "02:00:00:00:00:02",
    }]),
    { add: [], remove: [] },
  );
  assertEquals(
    nicChanges(current, [{ index: 0, mac: "02:00:00:00:00:01" }, {
      index: 2,
      mac: "02:00:00:00:00:03",
    }]),
    { add: [{ index: 2, mac: "02:00:00:00:00:03" }], remove: [current[1]] },
  );
  // Same number, another MAC: out and in again.
  assertEquals(nicChanges(current.slice(0, 1), [{ index: 0, mac: "02:00:00:00:00:09" }]), {
    add: [{ index: 0, mac: "02:00:00:00:00:09" }],
    remove: [current[0]],
  });
  const slirp: NicSpec[] = [{ id: "net0", mac: "52:54:00:00:00:01" }];
  assertEquals(nicChanges(slirp, []), { add: [], remove: [] });
  assertEquals(nicChanges(slirp, [{ index: 0, mac: "02:00:00:00:00:01" }]), null);
});

/** A QEMU that answers the hot-plug commands like 7.2 does, the guest releasing devices. */
function fakeQemu(opts: { guestReleases: boolean }) {
  const devices = new Set<string>(["vser0"]);
  const netdevs = new Set<string>();
  const sent: string[] = [];
  const listeners: ((e: { event: string; data?: Record<string, unknown> }) => void)[] = [];
  const pendingUnplug = new Set<string>();
  const qmp = {
    execute(command: string, args: Record<string, unknown> = {}) {
      sent.push(command);
      const id = String(args.id ?? "");
      switch (command) {
        case "qom-list":
          return Promise.resolve([...devices].map((name) => ({ name })));
        case "netdev_add":
          if (netdevs.has(id)) {
            return Promise.reject(
              new QmpError(command, "GenericError", `Duplicate ID '${id}' for netdev`),
            );
          }
          netdevs.add(id);
          return Promise.resolve({});
        case "device_add":
          devices.add(id);
          return Promise.resolve({});
        case "device_del":
          if (!devices.has(id)) {
            return Promise.reject(
              new QmpError(command, "DeviceNotFound", `Device '${id}' not found`),
            );
          }
          if (pendingUnplug.has(id)) {
            return Promise.reject(
              new QmpError(
                command,
                "GenericError",
                `Device ${id} is already in the process of unplug`,
              ),
            );
          }
          pendingUnplug.add(id);
          if (opts.guestReleases) {
            setTimeout(() => {
              devices.delete(id);
              for (const l of [...listeners]) l({ event: "DEVICE_DELETED", data: { device: id } });
            }, 5);
          }
          return Promise.resolve({});
        case "netdev_del":
          if (!netdevs.delete(id)) {
            return Promise.reject(
              new QmpError(command, "GenericError", `netdev '${id}' not found`),
            );
          }
          return Promise.resolve({});
      }
      return Promise.reject(new Error(`unexpected ${command}`));
    },
    waitForEvent(
      name: string,
      o: { timeoutMs: number; match?: (e: { data?: Record<string, unknown> }) => boolean },
    ) {
      return new Promise((resolve, reject) => {
        const l = (e: { event: string; data?: Record<string, unknown> }) => {
          if (e.event !== name || (o.match && !o.match(e))) return;
          listeners.splice(listeners.indexOf(l), 1);
          clearTimeout(timer);
          resolve(e);
        };
        const timer = setTimeout(() => {
          listeners.splice(listeners.indexOf(l), 1);
          reject(new TimeoutError(`no ${name}`));
        }, o.timeoutMs);
        listeners.push(l);
      });
    },
  };
  return { qemu: { qmp } as unknown as QemuVm, devices, netdevs, sent };
}

Deno.test("hot-add: backend then device; a repeat finds it done", async () => {
  const q = fakeQemu({ guestReleases: true });
  await hotAddNic(q.qemu, tap(1, "02:00:00:00:00:02"));
  assertEquals(q.sent, ["qom-list", "netdev_add", "device_add"]);
  assertEquals([...q.devices].sort(), ["net1-dev", "vser0"]);
  q.sent.length = 0;
  await hotAddNic(q.qemu, tap(1, "02:00:00:00:00:02"));
  assertEquals(q.sent, ["qom-list"]);
  // A backend left by a failed add is reused.
  q.netdevs.add("net2");
  await hotAddNic(q.qemu, tap(2, "02:00:00:00:00:03"));
  assertEquals(q.devices.has("net2-dev"), true);
});

Deno.test("hot-remove: device_del, DEVICE_DELETED, then netdev_del; repeats are harmless", async () => {
  const q = fakeQemu({ guestReleases: true });
  const nic = tap(1, "02:00:00:00:00:02");
  await hotAddNic(q.qemu, nic);
  q.sent.length = 0;
  await hotRemoveNic(q.qemu, nic);
  assertEquals(q.sent, ["qom-list", "device_del", "netdev_del"]);
  assertEquals([[...q.devices], [...q.netdevs]], [["vser0"], []]);
  await hotRemoveNic(q.qemu, nic);
});

Deno.test("hot-remove: a guest that does not let go times out, and a retry waits again", async () => {
  const q = fakeQemu({ guestReleases: false });
  const nic = tap(1, "02:00:00:00:00:02");
  await hotAddNic(q.qemu, nic);
  await assertRejects(() => hotRemoveNic(q.qemu, nic, 50), TimeoutError);
  // The request stays pending in QEMU: the retry does not fail on it, it waits again.
  await assertRejects(() => hotRemoveNic(q.qemu, nic, 50), TimeoutError);
  assertEquals(q.netdevs.has("net1"), true, "the backend stays while the device does");
});

Deno.test("hot-add: QEMU's denied /dev/net/tun becomes an error naming the device and the fix", () => {
  const denied = new QmpError(
    "netdev_add",
    "GenericError",
    "could not open /dev/net/tun: Permission denied",
  );
  const err = explainTapOpen(denied);
  assert(err instanceof UnavailableError);
  assert(
    err.message.includes("mode 0666") && err.message.includes("scripts/setup.sh"),
    err.message,
  );
  const other = new QmpError("netdev_add", "GenericError", "Duplicate ID 'net1' for netdev");
  assertEquals(explainTapOpen(other), other);
});
