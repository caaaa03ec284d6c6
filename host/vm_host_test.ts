/**
 * The reconcile loop against real QEMU with an in-memory stand-in for the
 * cluster (FakeCluster: records reports, applies the few commands a host
 * sends). Multi-node behaviour is covered in tests/vm_test.ts.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { DEFAULT_CONFIG } from "../core/config/mod.ts";
import type { Command, ImageRecord, VmRecord } from "../core/fsm/mod.ts";
import { QemuDriver } from "./kvm/mod.ts";
import { devicePresent } from "./kvm/unplug.ts";
import { guestDriverReady } from "./plugged_devices.ts";
import { DirPool } from "./storage/mod.ts";
import { type HostCluster, VmHost } from "./vm_host.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { MAX_KNOWN_LEVEL } from "../core/upgrade/levels.ts";

class FakeCluster implements HostCluster {
  readonly nodeName = "h1";
  readonly vms_ = new Map<string, VmRecord>();
  readonly reports: Command[] = [];
  clusterLevel = MAX_KNOWN_LEVEL;
  private listeners = new Set<(n: string | null) => void>();
  constructor(readonly blankDisk: string) {}
  vm(name: string) {
    return this.vms_.get(name) ?? null;
  }
  vmsHere() {
    return [...this.vms_.values()].filter((vm) => vm.node === this.nodeName);
  }
  image(): ImageRecord {
    return { name: "blank", kind: "disk", sources: [], createdAt: "", createdBy: "" };
  }
  operation() {
    return null;
  }
  config() {
    return { ...DEFAULT_CONFIG, "vms.stopTimeoutMs": 300 };
  }
  level() {
    return this.clusterLevel;
  }
  onVmChange(l: (n: string | null) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  pullImage() {
    return Promise.resolve({ disk: this.blankDisk });
  }
  report(cmd: Command): Promise<unknown> {
    this.reports.push(cmd);
    if (cmd.op === "vm.observed") {
      this.update(cmd.name, {
        state: cmd.state,
        reason: cmd.reason ?? null,
        ...(cmd.display !== undefined ? { display: cmd.display } : {}),
        ...(cmd.guest !== undefined ? { guest: cmd.guest } : {}),
      });
    }
    if (cmd.op === "vm.snapshot.add") {
      this.update(cmd.name, { snapshots: [...this.vm(cmd.name)!.snapshots, cmd.snapshot] });
    }
    if (cmd.op === "vm.desired") this.update(cmd.name, { desired: cmd.desired });
    // As core/fsm/vm_devices.ts applies it; a stopped QEMU has nothing plugged (core/fsm/vms.ts).
    if (cmd.op === "vm.devices") this.update(cmd.name, { plugged: cmd.plugged });
    if (cmd.op === "vm.observed" && ["stopped", "failed"].includes(cmd.state)) {
      this.update(cmd.name, { plugged: null });
    }
    if (cmd.op === "vm.remove") this.vms_.delete(cmd.name);
    return Promise.resolve(null);
  }
  update(name: string, changes: Partial<VmRecord>) {
    const vm = this.vms_.get(name);
    if (vm) this.vms_.set(name, { ...vm, ...changes });
    for (const l of this.listeners) l(name);
  }
}

function vmRecord(name: string): VmRecord {
  return {
    name,
    uuid: crypto.randomUUID(),
    image: "blank",
    cpus: 1,
    memoryMiB: 64,
    node: "h1",
    ha: false,
    labels: {},
    desired: "running",
    restartPolicy: "never",
    disks: [{
      id: "root",
      volume: `${name}-root`,
      sizeBytes: 64 * 2 ** 20,
      source: { kind: "image", image: "blank" },
    }],
    cloudInit: null,
    template: false,
    generation: 0,
    snapshots: [],
    state: "scheduled",
    reason: null,
    guest: null,
    createdAt: "",
    updatedAt: "",
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A temp dir with a blank image, a FakeCluster and a pool; `host()` makes a VmHost on them
 * (again after a "restart": the same run and pool dirs).
 */
async function onDisk() {
  const dir = await Deno.makeTempDir({ prefix: "novactl-host-" });
  const blank = `${dir}/blank.qcow2`;
  await new Deno.Command("qemu-img", { args: ["create", "-q", "-f", "qcow2", blank, "64M"] })
    .output();
  const cluster = new FakeCluster(blank);
  const pool = await new DirPool(`${dir}/pool`).init();
  const host = async () =>
    new VmHost({
      cluster,
      driver: await new QemuDriver(`${dir}/vms`).init(),
      pool,
      accel: () => Promise.resolve("tcg"),
    });
  return { dir, cluster, pool, host };
}

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "reconcile: start, reconnect a dropped QMP connection, stop, delete leaving nothing",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, pool, host: hostOn } = await onDisk();
  const host = await hostOn();
  await host.start();
  try {
    cluster.vms_.set("a", vmRecord("a"));
    host.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    const states = cluster.reports.filter((c) => c.op === "vm.observed").map((c) =>
      (c as { state: string }).state
    );
    assertEquals(states.slice(0, 2), ["starting", "running"]);
    const pid = host.pidOf("a")!;
    assert(pid > 0);

    // Drop our QMP connection: QEMU lives on; the host reconnects instead of calling it a crash.
    host.runtimes.get("a")!.qemu.qmp.close();
    host.schedule("a");
    await until("reconnected", () => host.runtimes.get("a")?.qemu.qmp.isClosed() === false);
    assertEquals(host.pidOf("a"), pid);
    assertEquals(cluster.vm("a")!.state, "running");

    cluster.update("a", { desired: "stopped" });
    await until("a stopped", () => cluster.vm("a")?.state === "stopped");
    assertEquals(host.pidOf("a"), null);

    cluster.update("a", { desired: "deleted" });
    await until("a removed", () => !cluster.vm("a"));
    assertEquals(await pool.has("a-root"), false);
    assertEquals(await host.driver.known(), []);
  } finally {
    host.stop();
    for (const rt of host.runtimes.values()) await rt.qemu.kill().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name:
    "a restarted host that hears it caught up while still re-adopting leaves the running QEMU alone",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, host: hostOn } = await onDisk();
  const first = await hostOn();
  await first.start();
  let second: VmHost | null = null;
  try {
    cluster.vms_.set("a", vmRecord("a"));
    first.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    const pid = first.pidOf("a")!;
    first.stop(); // the node process goes; its QEMU stays

    const reportsBefore = cluster.reports.length;
    second = await hostOn();
    // The lease renewal's "caught up" can land while start() is still re-adopting (it did,
    // after a restore): no reconcile may take the not-yet-adopted QEMU for a crash.
    const starting = second.start();
    second.markCaughtUp();
    await starting;
    await until("a reconciled after adoption", () => second!.pidOf("a") === pid);
    second.schedule("a");
    await new Promise((r) => setTimeout(r, 500));
    const reports = cluster.reports.slice(reportsBefore).map((c) =>
      c.op === "vm.observed" ? `${c.op} ${c.state} ${c.reason ?? ""}` : c.op
    );
    assertEquals(reports.filter((r) => !r.startsWith("vm.observed running")), [], "no reports");
    assertEquals(cluster.vm("a")!.state, "running");
    assertEquals(cluster.vm("a")!.desired, "running");
    assertEquals(second.pidOf("a"), pid, "the same QEMU");
  } finally {
    first.stop();
    second?.stop();
    for (const h of [first, second]) {
      for (const rt of h?.runtimes.values() ?? []) await rt.qemu.kill().catch(() => {});
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name:
    "consoles: a QEMU started before interactive consoles is re-adopted, its log readable, attaching refused",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, host: hostOn } = await onDisk();
  const first = await hostOn();
  await first.start();
  let second: VmHost | null = null;
  try {
    cluster.vms_.set("a", vmRecord("a"));
    first.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    // Interactive: two attachments share the one chardev connection; the VNC socket answers.
    const sink = () => ({ data: () => {}, end: () => {} });
    const one = await first.attachSerial("a", sink());
    const two = await first.attachSerial("a", sink());
    await one.write(new TextEncoder().encode("\n"));
    one.detach();
    two.detach();
    const vnc = await first.connectVnc("a");
    const greeting = new Uint8Array(12);
    let got = 0;
    while (got < 12) got += (await vnc.read(greeting.subarray(got))) ?? 12;
    vnc.close();
    assertEquals(new TextDecoder().decode(greeting), "RFB 003.008\n");

    // What an older node left running: the same VM with its serial on a file, no VNC.
    const rt = first.runtimes.get("a")!;
    const legacy = { ...rt.qemu.spec, consoles: undefined };
    first.stop();
    await rt.qemu.kill();
    const old = await first.driver.launch(legacy);
    await old.cont();
    old.close();

    second = await hostOn();
    second.markCaughtUp();
    await second.start();
    await until("the old QEMU adopted", () => second!.pidOf("a") === old.pid);
    assertEquals(cluster.vm("a")!.state, "running");
    await second.console("a", 1024); // the log still reads
    let refused = "";
    await second.attachSerial("a", sink()).catch((e) => refused = String(e));
    assert(/started by an older novactl/.test(refused), refused);
    refused = "";
    await second.connectVnc("a").catch((e) => refused = String(e));
    assert(/started by an older novactl/.test(refused), refused);
    assertEquals(second.pidOf("a"), old.pid, "still the same QEMU");
  } finally {
    first.stop();
    second?.stop();
    for (const h of [first, second]) {
      for (const rt of h?.runtimes.values() ?? []) await rt.qemu.kill().catch(() => {});
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  timeoutMs: 3 * MINUTE,
  name:
    "display: a fresh start gets VGA (reported); memory snapshots are loaded with the display they were saved with",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, host: hostOn } = await onDisk();
  const host = await hostOn();
  host.markCaughtUp();
  await host.start();
  try {
    cluster.vms_.set("a", vmRecord("a"));
    host.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    assertEquals(host.runtimes.get("a")!.qemu.spec.display, "vga", "a fresh QEMU has VGA");
    assertEquals(cluster.vm("a")!.display, "vga", "and its host says so");

    // A memory snapshot records the display; restored into a stopped VM, QEMU gets the device.
    const withVga = await host.createSnapshot("a", "s-vga", true);
    assertEquals(withVga.display, "vga");
    cluster.update("a", { desired: "stopped" });
    await until("a stopped", () => cluster.vm("a")?.state === "stopped");
    assertEquals(cluster.vm("a")!.display, null, "no QEMU, no display");
    await host.restoreSnapshot("a", "s-vga");
    let rt = host.runtimes.get("a")!;
    assertEquals([rt.qemu.spec.loadvm, rt.qemu.spec.display], ["s-vga", "vga"]);
    assertEquals(await rt.qemu.status(), "running");

    // What an older version left: a QEMU without a display, and its memory snapshot recorded
    // without one (the field absent).
    const legacy = { ...rt.qemu.spec, display: undefined, loadvm: undefined };
    host.stop();
    await rt.qemu.kill();
    const old = await host.driver.launch(legacy);
    await old.cont();
    old.close();
    const second = await hostOn();
    second.markCaughtUp();
    await second.start();
    try {
      await until("the old QEMU adopted", () => second.pidOf("a") === old.pid);
      await until("its display reported", () => cluster.vm("a")!.display === "none");
      const { display: _, ...noDisplay } = await second.createSnapshot("a", "s-old", true);
      assertEquals(_, "none");
      const snaps = cluster.vm("a")!.snapshots.map((x) => x.name === "s-old" ? noDisplay : x);
      cluster.update("a", { snapshots: snaps });

      // Restored while a QEMU with VGA runs: that QEMU cannot take the device state, so a new
      // one without a display loads it.
      await second.restoreSnapshot("a", "s-vga"); // back to a VGA QEMU (loaded in place)
      assertEquals(second.runtimes.get("a")!.qemu.spec.display, "vga");
      await second.restoreSnapshot("a", "s-old");
      rt = second.runtimes.get("a")!;
      assertEquals([rt.qemu.spec.loadvm, rt.qemu.spec.display], ["s-old", "none"]);
      assertEquals(await rt.qemu.status(), "running");
      await until("reported without display", () => cluster.vm("a")!.display === "none");
    } finally {
      second.stop();
      for (const rt of second.runtimes.values()) await rt.qemu.kill().catch(() => {});
    }
  } finally {
    host.stop();
    for (const rt of host.runtimes.values()) await rt.qemu.kill().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  timeoutMs: 3 * MINUTE,
  name:
    "display at cluster level 1 (a 0.1.0 member remains): no VGA device, no display in reports or snapshots; at level 2 the next boot has VGA",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, host: hostOn } = await onDisk();
  cluster.clusterLevel = 1;
  const host = await hostOn();
  host.markCaughtUp();
  await host.start();
  const observed = () => cluster.reports.filter((r) => r.op === "vm.observed");
  try {
    // A record that disagrees with QEMU's devices: at level 2 that would be reported.
    cluster.vms_.set("a", { ...vmRecord("a"), plugged: { disks: ["old"], nics: [] } });
    host.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    assertEquals(host.runtimes.get("a")!.qemu.spec.display, "none", "as a 0.1.0 host launches");
    const snap = await host.createSnapshot("a", "s1", true);
    assertEquals("display" in snap, false, "a 0.1.0 leader refuses the field");
    // Reconciles (every 2 s) find nothing to report: the missing display is not news.
    await until("the guest agent's absence reported", () => cluster.vm("a")?.guest != null);
    const reported = observed().length;
    await new Promise((r) => setTimeout(r, 5_000));
    assertEquals(observed().length, reported, "no report repeated while nothing changed");
    for (const r of observed()) assertEquals("display" in r, false, JSON.stringify(r));
    const devices = cluster.reports.filter((r) => r.op === "vm.devices");
    assertEquals(devices, [], "a 0.1.0 leader refuses vm.devices: not sent below level 2");

    cluster.clusterLevel = 2;
    cluster.update("a", { desired: "stopped" });
    await until("a stopped", () => cluster.vm("a")?.state === "stopped");
    cluster.update("a", { desired: "running" });
    await until("a running with VGA", () => cluster.vm("a")?.display === "vga");
    assertEquals(host.runtimes.get("a")!.qemu.spec.display, "vga");
  } finally {
    host.stop();
    for (const rt of host.runtimes.values()) await rt.qemu.kill().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

testWithTimeout({
  timeoutMs: 3 * MINUTE,
  name:
    "devices: reported when they differ from the record, once; a hot-added disk its guest has not set up is not plugged",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { dir, cluster, pool, host: hostOn } = await onDisk();
  const host = await hostOn();
  host.markCaughtUp();
  await host.start();
  const reported = () => cluster.reports.filter((r) => r.op === "vm.devices");
  try {
    // The record says a volume is plugged (as left by an earlier QEMU): this one has none, which
    // is news, reported once.
    cluster.vms_.set("a", { ...vmRecord("a"), plugged: { disks: ["old"], nics: [] } });
    host.schedule("a");
    await until("a running", () => cluster.vm("a")?.state === "running");
    await until("its devices reported", () => reported().length > 0);
    assertEquals(cluster.vm("a")!.plugged, { disks: [], nics: [] });

    // A volume attached while it runs: QEMU gets it, but this guest (a blank disk: no OS, no
    // virtio driver) never sets it up, so it is not plugged, and there is nothing to report.
    await pool.create("data1", 2 ** 20);
    const vd0 = {
      id: "vd0",
      pool: "dir",
      volume: "data1",
      sizeBytes: 2 ** 20,
      source: { kind: "attached" as const },
      port: 0,
    };
    cluster.update("a", { disks: [...cluster.vm("a")!.disks, vd0] });
    const qemu = () => host.runtimes.get("a")!.qemu;
    await until("QEMU has the disk", () => qemu().spec.disks.some((d) => d.id === "vd0"));
    assert(await devicePresent(qemu(), "vd0-dev"));
    assertEquals(await guestDriverReady(qemu(), "vd0-dev"), false, "QEMU says: not set up");

    // Rounds every 2 s (and the quicker follow-up after a hot-add) find nothing new: nothing is
    // reported (each report is a Raft entry), and the guest has not got the disk.
    await new Promise((r) => setTimeout(r, 5_000));
    assertEquals(reported().length, 1, "nothing reported again while nothing changed");
    assertEquals(cluster.vm("a")!.plugged, { disks: [], nics: [] }, "the guest has not got it");
  } finally {
    host.stop();
    for (const rt of host.runtimes.values()) await rt.qemu.kill().catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
