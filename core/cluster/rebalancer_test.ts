/**
 * The rebalancer on a real one-voter leader: what it plans (and leaves
 * frozen), how a plan runs as migrations, and the periodic loop. The test
 * plays the source hosts' migrators.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { ConflictError } from "../errors/mod.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { applyRebalance, rebalancePlan, Rebalancer } from "./rebalancer.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** n1 empty, n2 full of four 1-GiB VMs r1..r4: moving two evens them out. */
async function lopsided(): Promise<TestCluster> {
  const c = await TestCluster.start({ memoryMiB: 4_096 });
  await c.addHost("n2", { memoryMiB: 4_096 });
  for (const name of ["r1", "r2", "r3", "r4"]) {
    await c.vm({ name, node: "n2", memoryMiB: 1_024 });
  }
  return c;
}

const movedVms = (plan: { moves: { vm: string }[] }) => plan.moves.map((m) => m.vm).sort();

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "rebalancePlan evens load and never moves a migrating or cooling VM",
    ...opts,
  },
  async (t) => {
    const c = await lopsided();
    try {
      await t.step("two moves from the full host to the empty one", () => {
        const plan = rebalancePlan(c.node);
        assertEquals(plan.moves.length, 2);
        for (const m of plan.moves) assertEquals([m.from, m.to], ["n2", "n1"]);
        assert(plan.imbalanceBefore > plan.imbalanceAfter, JSON.stringify(plan));
      });

      await t.step("a VM being migrated and one migrated within the cooldown stay", async () => {
        await c.node.propose({
          op: "vm.update",
          name: "r1",
          changes: { migration: { opId: "mig-x", to: "n1" } },
          by: "t",
          at: Date.now(),
        });
        await c.node.propose({
          op: "operation.create",
          operation: {
            id: "mig-old",
            kind: "migrate",
            target: "r2",
            runner: "n2",
            params: {},
            by: "t",
          },
          at: Date.now(),
        });
        assertEquals(movedVms(rebalancePlan(c.node)), ["r3", "r4"]);
      });

      await t.step(
        "once the cooldown is over, the recently migrated VM may move again",
        async () => {
          await c.patchConfig({ "rebalancer.cooldownMs": 0 });
          assert(movedVms(rebalancePlan(c.node)).includes("r2"));
        },
      );
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "applyRebalance runs the plan as migrations, one rebalance at a time",
    ...opts,
  },
  async (t) => {
    const c = await lopsided();
    const hosts = c.completeMigrations();
    try {
      const plan = rebalancePlan(c.node);
      const op = await applyRebalance(c.node, plan, "ops");
      await t.step("a second rebalance while one runs is refused", async () => {
        await assertRejects(() => applyRebalance(c.node, plan, "ops"), ConflictError);
      });
      await c.until(
        "the rebalance to finish",
        () => c.node.fsm.operation(op.id)?.state !== "running",
      );
      await t.step("every planned VM is on its planned host and the operation says so", () => {
        const done = c.node.fsm.operation(op.id)!;
        assertEquals([done.kind, done.state, done.by], ["rebalance", "succeeded", "ops"]);
        for (const m of plan.moves) {
          assertEquals(c.node.fsm.vm(m.vm)!.node, m.to);
        }
        assertEquals((done.result as { moved: unknown[] }).moved.length, plan.moves.length);
        const migrations = c.node.fsm.operations().filter((o) => o.kind === "migrate");
        assertEquals(migrations.map((o) => o.by), plan.moves.map(() => "rebalancer"));
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
    name: "a planned move whose VM moved meanwhile is reported, not forced",
    ...opts,
  },
  async () => {
    const c = await lopsided();
    const hosts = c.completeMigrations();
    try {
      const plan = rebalancePlan(c.node);
      const victim = plan.moves[0].vm;
      await c.node.propose({
        op: "vm.moved",
        name: victim,
        from: "n2",
        to: "n1",
        reason: "someone else",
        at: Date.now(),
      });
      const op = await applyRebalance(c.node, plan, "ops");
      await c.until(
        "the rebalance to finish",
        () => c.node.fsm.operation(op.id)?.state !== "running",
      );
      const done = c.node.fsm.operation(op.id)!;
      assertEquals(done.state, "failed");
      assertEquals((done.result as { failed: Record<string, string> }).failed, {
        [victim]: "moved meanwhile",
      });
      const migrated = c.node.fsm.operations().filter((o) => o.kind === "migrate");
      assertEquals(migrated.map((o) => o.target), [plan.moves[1].vm]);
    } finally {
      hosts.stop();
      await c.stop();
    }
  },
);

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "the periodic rebalancer applies a plan once enabled",
  ...opts,
}, async () => {
  const c = await lopsided();
  const hosts = c.completeMigrations();
  const loop = new Rebalancer(c.node);
  try {
    await c.patchConfig({ "rebalancer.enabled": true, "rebalancer.intervalMs": 1_000 });
    loop.start();
    const rebalances = () => c.node.fsm.operations().filter((o) => o.kind === "rebalance");
    await c.until("a rebalance by the loop", () => rebalances().length > 0);
    assertEquals(rebalances()[0].by, "rebalancer");
    await c.until("the loop's rebalance to finish", () => rebalances()[0].state !== "running");
    const onN1 = c.node.fsm.vms().filter((v) => v.node === "n1").length;
    assertEquals(onN1, 2, "load evened out: two VMs on each host");
  } finally {
    loop.stop();
    hosts.stop();
    await c.stop();
  }
});
