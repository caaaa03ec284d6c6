/**
 * Cordon, drain and evacuate on a real one-voter leader. The test plays the
 * source hosts' migrators (it finishes the migrations the drain starts), so
 * what is checked is the leader's bookkeeping: every VM moved or reported,
 * the node's state, the operation's outcome.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { ConflictError, NotFoundError } from "../errors/mod.ts";
import type { OperationRecord, VmDisk } from "../fsm/mod.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { drainNode, setNodeState } from "./drain_service.ts";
import { LeaseTable } from "./lease.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

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

const disk = (pool: "dir" | "shared"): VmDisk => ({
  id: "root",
  volume: `v-${crypto.randomUUID().slice(0, 8)}`,
  sizeBytes: 1 << 30,
  source: { kind: "blank" },
  pool,
});

async function finished(c: TestCluster, id: string): Promise<OperationRecord> {
  await c.until(`operation ${id} to finish`, () => c.node.fsm.operation(id)?.state !== "running");
  return c.node.fsm.operation(id)!;
}

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "cordon and uncordon set the node's state; unknown nodes are 404",
    ...opts,
  },
  async () => {
    const c = await TestCluster.start();
    try {
      await c.addHost("n2");
      await setNodeState(c.node, "n2", "cordoned");
      assertEquals(c.node.fsm.node("n2")!.state, "cordoned");
      await setNodeState(c.node, "n2", "ready");
      assertEquals(c.node.fsm.node("n2")!.state, "ready");
      await assertRejects(() => setNodeState(c.node, "ghost", "cordoned"), NotFoundError);
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "drain moves every VM away, live or cold, then marks the node drained",
    ...opts,
  },
  async (t) => {
    const c = await TestCluster.start();
    const hosts = c.completeMigrations();
    try {
      await c.addHost("n2");
      await c.addHost("n3");
      await c.patchConfig({ "drain.parallelism": 2 });
      await c.vm({ name: "a", node: "n2" });
      await c.vm({ name: "b", node: "n2" });
      await c.vm({ name: "off", node: "n2", desired: "stopped" }, "stopped");
      await c.vm({ name: "tpl", node: "n2", desired: "stopped", template: true }, "stopped");
      await c.vm({ name: "stay", node: "n3" });

      const op = await drainNode(c.node, "n2", "drain", new ScriptedLeases(), "ops");
      await t.step("the node is draining and a second drain is refused", async () => {
        assertEquals([op.kind, op.target, op.by], ["drain", "n2", "ops"]);
        assertEquals(c.node.fsm.node("n2")!.state, "draining");
        await assertRejects(
          () => drainNode(c.node, "n2", "drain", new ScriptedLeases(), "ops"),
          ConflictError,
        );
      });

      const done = await finished(c, op.id);
      await t.step("every VM but the template left n2; the operation lists each", () => {
        assertEquals(done.state, "succeeded", done.error ?? "");
        const moved = (done.result as { moved: Record<string, string> }).moved;
        assertEquals(Object.keys(moved).sort(), ["a", "b", "off"]);
        for (const name of ["a", "b", "off"]) {
          const to = c.node.fsm.vm(name)!.node;
          assertEquals(moved[name], to);
          assert(to !== "n2", `${name} is on ${to}`);
        }
        assertEquals(c.node.fsm.vm("tpl")!.node, "n2");
        assertEquals(c.node.fsm.vm("stay")!.node, "n3");
      });
      await t.step("stopped VMs move cold, running ones live", () => {
        const live = Object.fromEntries(
          c.node.fsm.operations().filter((o) => o.kind === "migrate").map((o) => [
            o.target,
            o.params.live,
          ]),
        );
        assertEquals(live, { a: true, b: true, off: false });
      });
      await t.step("the node ends drained; progress counted every VM", () => {
        assertEquals(c.node.fsm.node("n2")!.state, "drained");
        assertEquals((done.progress as { done: number; total: number }).done, 3);
      });
    } finally {
      hosts.stop();
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "drain reports a VM that cannot move and leaves the node undrained",
    ...opts,
  },
  async () => {
    const c = await TestCluster.start();
    const hosts = c.completeMigrations(new Set(["stuck"]));
    try {
      await c.addHost("n2");
      await c.vm({ name: "ok", node: "n2" });
      await c.vm({ name: "stuck", node: "n2" });
      const op = await drainNode(c.node, "n2", "drain", new ScriptedLeases(), "ops");
      const done = await finished(c, op.id);
      assertEquals(done.state, "failed");
      assert(/could not move: stuck \(destination refused\)/.test(done.error!), done.error!);
      assertEquals(Object.keys((done.result as { moved: object }).moved), ["ok"]);
      assertEquals(c.node.fsm.node("n2")!.state, "draining");
    } finally {
      hosts.stop();
      await c.stop();
    }
  },
);

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "evacuating a lost host restarts shared-disk VMs; local-disk ones are reported",
  ...opts,
}, async () => {
  const c = await TestCluster.start();
  try {
    await c.addHost("n2");
    await c.addHost("n3");
    await c.vm({ name: "shared", node: "n2", disks: [disk("shared")] });
    await c.vm({ name: "local", node: "n2", disks: [disk("dir")] });
    c.silence("n2");
    const leases = new ScriptedLeases();
    leases.expired.add("n2");
    const op = await drainNode(c.node, "n2", "evacuate", leases, "ops");
    const done = await finished(c, op.id);
    const shared = c.node.fsm.vm("shared")!;
    assert(shared.node !== "n2", `shared is on ${shared.node}`);
    assertEquals(shared.state, "scheduled", "restarted, not migrated: nothing runs on n2");
    assertEquals(shared.reason, "evacuated from n2");
    assertEquals(c.node.fsm.vm("local")!.node, "n2");
    assertEquals(done.state, "failed");
    assert(/local \(its disks are local to the lost host\)/.test(done.error!), done.error!);
    assertEquals(
      c.node.fsm.operations().filter((o) => o.kind === "migrate"),
      [],
      "no migration from a dead host",
    );
  } finally {
    await c.stop();
  }
});
