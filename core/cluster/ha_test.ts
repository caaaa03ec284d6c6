/**
 * HA on a real one-voter leader: which VMs move when a host's lease has
 * surely expired, in which order, within which budget, and what is reported
 * for the ones that cannot move. The lease table is scripted (which hosts have
 * surely expired); everything else is the real leader and its SQLite state.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { HaManager } from "./ha.ts";
import { LeaseTable } from "./lease.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { metrics } from "../metrics/mod.ts";

/** The value of a counter (of its series with `labels`), 0 before its first increment. */
async function counted(
  c: { get(): Promise<{ values: { value: number; labels: Record<string, unknown> }[] }> },
  labels: Record<string, string> = {},
): Promise<number> {
  const { values } = await c.get();
  const v = values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** A lease table whose expired hosts the test names. */
class ScriptedLeases extends LeaseTable {
  readonly expired = new Set<string>();

  constructor() {
    super(() => 1);
  }

  override surelyExpired(host: string): boolean {
    return this.expired.has(host);
  }
}

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: a dead host's HA VMs move by priority; the rest are reported failed",
  ...opts,
}, async (t) => {
  // n3 has room for exactly one 1-GiB VM: priority decides which HA VM gets it.
  const c = await TestCluster.start({ memoryMiB: 0 });
  const leases = new ScriptedLeases();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.addHost("n3", { memoryMiB: 1_200 });
    await c.vm({ name: "low", node: "n2", ha: true, haPriority: 1, memoryMiB: 1_024 });
    await c.vm({ name: "high", node: "n2", ha: true, haPriority: 9, memoryMiB: 1_024 });
    await c.vm({ name: "plain", node: "n2", memoryMiB: 16 });
    await c.vm({ name: "elsewhere", node: "n3", ha: true, memoryMiB: 16 });

    await t.step("nothing happens while every lease holds", async () => {
      await ha.tick();
      assertEquals(c.node.fsm.vm("high")!.node, "n2");
      assertEquals(c.node.fsm.vm("plain")!.state, "running");
    });

    const restartsBefore = await counted(metrics.haRestarts);
    const lostBefore = await counted(metrics.fencingEvents, { event: "host_lost" });
    leases.expired.add("n2");
    c.silence("n2");
    await ha.tick();
    const vm = (name: string) => c.node.fsm.vm(name)!;

    await t.step("metrics: one HA restart, one host lost (counted once per loss)", async () => {
      assertEquals(await counted(metrics.haRestarts), restartsBefore + 1);
      await ha.tick();
      assertEquals(await counted(metrics.fencingEvents, { event: "host_lost" }), lostBefore + 1);
    });

    await t.step("the higher-priority HA VM takes the only room left", () => {
      assertEquals([vm("high").node, vm("high").state], ["n3", "scheduled"]);
      assert(/HA restart: host n2 lost its lease/.test(vm("high").reason!), vm("high").reason!);
    });
    await t.step("the other HA VM is failed with the reason no host took it", () => {
      assertEquals([vm("low").node, vm("low").state], ["n2", "failed"]);
      assert(/no host can take it/.test(vm("low").reason!), vm("low").reason!);
    });
    await t.step("a non-HA VM on the dead host is reported failed, not moved", () => {
      assertEquals([vm("plain").node, vm("plain").state], ["n2", "failed"]);
      assert(/offline \(lease expired\)/.test(vm("plain").reason!), vm("plain").reason!);
    });
    await t.step("a VM on a live host is left alone", () => {
      assertEquals([vm("elsewhere").node, vm("elsewhere").state], ["n3", "running"]);
    });
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: a VM that fails to start is placed again, within its restart budget",
  ...opts,
}, async (t) => {
  const c = await TestCluster.start({ memoryMiB: 0 });
  const leases = new ScriptedLeases();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.addHost("n3");
    await c.addHost("n4");
    await c.vm({ name: "db", node: "n2", ha: true, haMaxRestarts: 2 });
    leases.expired.add("n2");
    c.silence("n2");
    await ha.tick();
    const first = c.node.fsm.vm("db")!.node!;
    assert(first === "n3" || first === "n4", `moved to ${first}`);

    await t.step(
      "a start failure on a live host moves it on; a lock names the old host",
      async () => {
        await c.observe("db", first, "failed", "start failed: disk locked by another QEMU process");
        await ha.tick();
        const db = c.node.fsm.vm("db")!;
        assert(db.node !== first && db.node !== "n2", `moved on to ${db.node}`);
        assertEquals(db.state, "scheduled");
        assert(/probably on n2/.test(db.reason!), db.reason!);
      },
    );

    await t.step("past haMaxRestarts it stays failed, saying the limit was reached", async () => {
      const second = c.node.fsm.vm("db")!.node!;
      await c.observe("db", second, "failed", "start failed: no kvm");
      await ha.tick();
      const db = c.node.fsm.vm("db")!;
      assertEquals([db.node, db.state], [second, "failed"]);
      assert(/HA restart limit reached; last: start on .* failed: no kvm/.test(db.reason!));
    });

    await t.step("a failure that is not a start failure is not retried", async () => {
      await c.vm({ name: "web", node: "n3", ha: true }, "failed", "guest crashed");
      await ha.tick();
      assertEquals(c.node.fsm.vm("web")!.node, "n3");
    });
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: a renewal that lands during the pass stops the move (checked again before it)",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  // Expired when the pass looks for dead hosts; renewed by the time the move is decided.
  const looks: string[] = [];
  const leases = new class extends ScriptedLeases {
    override surelyExpired(host: string): boolean {
      looks.push(host);
      return looks.filter((h) => h === host).length === 1;
    }
  }();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.vm({ name: "db", node: "n2", ha: true });
    await ha.tick();
    assert(looks.filter((h) => h === "n2").length >= 2, "the lease was checked again");
    const db = c.node.fsm.vm("db")!;
    assertEquals([db.node, db.state], ["n2", "running"], "never placed twice");
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: with ha.enabled false, HA VMs of a dead host are failed, never moved",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  const leases = new ScriptedLeases();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.patchConfig({ "ha.enabled": false });
    await c.vm({ name: "db", node: "n2", ha: true });
    leases.expired.add("n2");
    await ha.tick();
    const db = c.node.fsm.vm("db")!;
    assertEquals([db.node, db.state], ["n2", "failed"]);
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: operations run by a dead host are failed and their VMs unmarked",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  const leases = new ScriptedLeases();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.vm({ name: "web", node: "n2" }, "stopped");
    await c.node.propose({
      op: "operation.create",
      operation: {
        id: "mig-1",
        kind: "migrate",
        target: "web",
        runner: "n2",
        params: {},
        by: "t",
      },
      at: Date.now(),
    });
    await c.node.propose({
      op: "vm.update",
      name: "web",
      changes: { migration: { opId: "mig-1", to: "n1" } },
      by: "t",
      at: Date.now(),
    });
    leases.expired.add("n2");
    await ha.tick();
    const op = c.node.fsm.operation("mig-1")!;
    assertEquals(op.state, "failed");
    assert(/host n2 running it went offline/.test(op.error!), op.error!);
    assertEquals(c.node.fsm.vm("web")!.migration ?? null, null);
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: the real lease table never declares a host dead before its lease ran out",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  const leases = new LeaseTable(() => c.node.isLeader() ? c.node.raft.status().term : null);
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.vm({ name: "db", node: "n2", ha: true });
    // The leader just started its term: n2 may still hold a lease for ha.leaseMs.
    assertEquals(ha.deadHosts(), []);
    await ha.tick();
    assertEquals(c.node.fsm.vm("db")!.node, "n2");
  } finally {
    await c.stop();
  }
});

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "HA: a removed member's HA VMs move once its lease surely expired; the rest are failed",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  const leases = new ScriptedLeases();
  const ha = new HaManager(c.node, leases);
  try {
    await c.addHost("n2");
    await c.vm({ name: "h", node: "n2", ha: true, memoryMiB: 16 });
    await c.vm({ name: "p", node: "n2", memoryMiB: 16 });
    c.silence("n2");
    // As `cluster remove n2` or a forced recovery does: the host record goes, the VMs stay.
    await c.node.changeMembership({
      type: "remove",
      node: "n2",
      context: JSON.stringify({ at: Date.now() }),
    });
    assertEquals(c.node.fsm.node("n2"), null);
    await ha.tick();
    assertEquals(c.node.fsm.vm("h")!.node, "n2", "nothing moves before its lease surely expired");
    leases.expired.add("n2");
    await ha.tick();
    assertEquals(c.node.fsm.vm("h")!.node, "n1");
    assertEquals([c.node.fsm.vm("p")!.node, c.node.fsm.vm("p")!.state], ["n2", "failed"]);
  } finally {
    await c.stop();
  }
});
