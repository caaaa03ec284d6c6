/**
 * Hot-plug state (./vm_devices.ts): `vm.devices` from the VM's host records what its QEMU
 * has plugged, alike on every replica, refused below cluster level 2 (by the applier and the
 * leader's gate); no QEMU, nothing plugged. And the wait for it (core/cluster/vm_wait.ts),
 * woken by the report itself.
 */
import { Replicas } from "../testing/fsm.ts";
import type { StateMachine } from "./state_machine.ts";
import { testVmSpec } from "../testing/fixtures.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { Command, VmDisk, VmPlugged, VmState } from "./commands.ts";
import { assertCommandAllowed } from "../upgrade/mod.ts";
import { FeatureUnavailableError } from "../errors/mod.ts";
import { diskPlugged, nicPlugged, withPluggedView } from "./vm_devices.ts";
import type { ClusterNode } from "../cluster/node.ts";
import { plugSettled, waitForPlug } from "../cluster/vm_wait.ts";
import { parsePeerCommand } from "./command_schemas.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

let clock = 100;

const DATA: VmDisk = {
  id: "vd0",
  pool: "dir",
  volume: "data1",
  sizeBytes: 2 ** 20,
  source: { kind: "attached" },
  port: 0,
};

/** Host h1 (0.2.0) at `level`, and VM vm1 on it with volume data1 attached, in `state`. */
async function setUp(level: 1 | 2, state: VmState = "running"): Promise<Replicas> {
  const r = new Replicas(await Deno.makeTempDir());
  r.apply({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "h1", url: "http://h1" },
    adminTokenHash: "h",
    config: DEFAULT_CONFIG,
    at: 1,
  });
  r.apply({
    op: "node.upsert",
    name: "h1",
    url: "http://h1",
    labels: {},
    inventory: {
      cpus: 64,
      memoryMiB: 65536,
      diskGiB: 100,
      diskFreeGiB: 100,
      accel: "tcg",
      arch: "x86_64",
      kernel: "k",
      hostname: "h1",
      version: "0.2.0",
    },
    at: 2,
  });
  r.apply({
    op: "image.create",
    image: {
      name: "img",
      kind: "kernel",
      kernel: { sha256: "0".repeat(64), size: 1 },
      sources: [],
    },
    by: "t",
    at: 3,
  });
  if (level === 2) r.apply({ op: "cluster.upgrade", level: 2, at: 4 });
  r.apply({
    op: "vm.create",
    vm: testVmSpec("vm1", "h1", {
      desired: state === "running" ? "running" : "stopped",
      disks: [DATA],
      nics: [],
    }),
    by: "t",
    at: 5,
  });
  observe(r, state);
  return r;
}

function observe(r: Replicas, state: VmState): void {
  r.apply({ op: "vm.observed", name: "vm1", node: "h1", state, at: ++clock });
}

function devices(plugged: VmPlugged, node = "h1"): Command {
  return { op: "vm.devices", name: "vm1", node, plugged, at: ++clock };
}

/** A stand-in for the node a wait runs on: it reads only the local replica. */
const nodeOf = (fsm: StateMachine) => ({ fsm }) as unknown as ClusterNode;

testWithTimeout({
  name: "vm.devices records what the QEMU has plugged, alike everywhere; no QEMU, nothing plugged",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp(2);
  try {
    let vm = r.a.vm("vm1")!;
    assertEquals(vm.plugged ?? null, null, "not reported yet");
    assertEquals(diskPlugged(vm, DATA), null, "unknown until its host reports");

    r.apply(devices({ disks: ["data1"], nics: ["52:54:00:AA:BB:01"] }));
    vm = r.a.vm("vm1")!;
    assertEquals(vm.plugged, { disks: ["data1"], nics: ["52:54:00:aa:bb:01"] });
    assertEquals(r.b.vm("vm1")!.plugged, vm.plugged);
    assertEquals(diskPlugged(vm, DATA), true);
    assertEquals(nicPlugged(vm, "52:54:00:aa:bb:01"), true);
    assertEquals(nicPlugged(vm, "52:54:00:aa:bb:02"), false);
    assertEquals(withPluggedView(vm).disks[0], { ...DATA, plugged: true } as VmDisk);

    // The same set again (in another order) changes nothing: not even the record's time.
    const at = vm.updatedAt;
    r.apply(devices({ disks: ["data1", "data1"], nics: ["52:54:00:aa:bb:01"] }));
    assertEquals(r.a.vm("vm1")!.updatedAt, at);

    // A report from a host the VM is not on is stale: ignored.
    r.apply(devices({ disks: [], nics: [] }, "h2"));
    assertEquals(r.a.vm("vm1")!.plugged!.disks, ["data1"]);

    // Its QEMU stops: nothing is plugged, and a late report of it changes nothing.
    observe(r, "stopped");
    vm = r.a.vm("vm1")!;
    assertEquals(vm.plugged, null);
    assertEquals(diskPlugged(vm, DATA), null, "not running: null");
    r.apply(devices({ disks: ["data1"], nics: [] }));
    assertEquals(r.a.vm("vm1")!.plugged, null);
  } finally {
    r.close();
  }
});

testWithTimeout({
  name:
    "vm.devices is level 2: below it the applier refuses it, the leader's gate too, and waits answer at once",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp(1);
  try {
    const cmd = devices({ disks: ["data1"], nics: [] });
    const out = r.try(cmd);
    assert(!out.ok && out.error instanceof FeatureUnavailableError, JSON.stringify(out));
    assertEquals(r.a.vm("vm1")!.plugged ?? null, null);
    let gate: unknown = null;
    try {
      assertCommandAllowed(cmd, r.a);
    } catch (err) {
      gate = err;
    }
    assert(gate instanceof FeatureUnavailableError, `the leader refuses it: ${gate}`);
    // Nothing will ever report: a wait must not hold the caller to its timeout.
    assertEquals(plugSettled(r.a.vm("vm1"), { disk: "data1" }, true, r.a.clusterLevel()), true);
    const w = await waitForPlug(nodeOf(r.a), "vm1", { disk: "data1" }, true, {
      timeoutMs: 60_000,
    });
    assertEquals(w.settled, true);

    r.apply({ op: "cluster.upgrade", level: 2, at: ++clock });
    assertCommandAllowed(cmd, r.a);
    r.apply(cmd);
    assertEquals(r.a.vm("vm1")!.plugged!.disks, ["data1"]);
  } finally {
    r.close();
  }
});

testWithTimeout({
  name: "peers may send vm.devices; its strict schema refuses unknown fields and bad MACs",
  timeoutMs: MINUTE,
}, () => {
  const ok = parsePeerCommand({
    op: "vm.devices",
    name: "vm1",
    node: "h1",
    plugged: { disks: ["data1"], nics: ["52:54:00:00:00:01"] },
    at: 1,
  });
  assertEquals(ok.op, "vm.devices");
  for (
    const bad of [
      { plugged: { disks: [], nics: [], extra: 1 } },
      { plugged: { disks: [], nics: ["nope"] } },
      { plugged: { disks: [] } },
      { extra: true },
    ]
  ) {
    let refused = "";
    try {
      parsePeerCommand({
        op: "vm.devices",
        name: "vm1",
        node: "h1",
        plugged: { disks: [], nics: [] },
        at: 1,
        ...bad,
      });
    } catch (err) {
      refused = String(err);
    }
    assert(/malformed vm\.devices: command/.test(refused), `refused: ${JSON.stringify(bad)}`);
  }
});

testWithTimeout({
  name:
    "a hot-plug wait ends when the host reports the device plugged (or gone), or the VM stops; not before",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp(2);
  const node = nodeOf(r.a);
  try {
    r.apply(devices({ disks: [], nics: [] }));
    // Attached, not yet plugged: the wait holds until the report, and the report wakes it.
    const attach = waitForPlug(node, "vm1", { disk: "data1" }, true, { timeoutMs: 60_000 });
    let ended = false;
    void attach.then(() => ended = true);
    await new Promise((res) => setTimeout(res, 50));
    r.apply(devices({ disks: [], nics: ["52:54:00:00:00:01"] })); // another device: not it
    await new Promise((res) => setTimeout(res, 50));
    assertEquals(ended, false, "not settled before the disk is plugged");
    r.apply(devices({ disks: ["data1"], nics: ["52:54:00:00:00:01"] }));
    const a = await attach;
    assertEquals([a.settled, a.vm!.plugged!.disks], [true, ["data1"]]);

    // Detach: settled once the QEMU let go.
    const detach = waitForPlug(node, "vm1", { disk: "data1" }, false, { timeoutMs: 60_000 });
    r.apply(devices({ disks: [], nics: ["52:54:00:00:00:01"] }));
    assertEquals((await detach).settled, true);

    // The deadline: unsettled, with the record as it is.
    const late = await waitForPlug(node, "vm1", { nic: "52:54:00:00:00:09" }, true, {
      timeoutMs: 30,
    });
    assertEquals(late.settled, false);

    // The VM stops being running: settled (it gets the change at its next start).
    const nic = waitForPlug(node, "vm1", { nic: "52:54:00:00:00:09" }, true, { timeoutMs: 60_000 });
    observe(r, "stopping");
    assertEquals((await nic).settled, true);

    // A stopped VM's change is settled at once; a starting one's waits for its run.
    observe(r, "stopped");
    assertEquals(plugSettled(r.a.vm("vm1"), { disk: "data2" }, true, 2), true);
    observe(r, "starting");
    assertEquals(plugSettled(r.a.vm("vm1"), { disk: "data2" }, true, 2), false);
    observe(r, "running");
    assertEquals(
      plugSettled(r.a.vm("vm1"), { disk: "data2" }, true, 2),
      false,
      "running, not reported since: still on its way",
    );
    assertEquals(
      plugSettled(r.a.vm("vm1"), { disk: "data2" }, false, 2),
      true,
      "nothing reported plugged: a removal has nothing to wait for",
    );
  } finally {
    r.close();
  }
});
