import { assert, assertEquals } from "../testing/assert.ts";
import { AuditBuffer, auditBufferOf } from "./audit.ts";
import { drainNode } from "./drain_service.ts";
import { applyRebalance, rebalancePlan } from "./rebalancer.ts";
import { LeaseTable } from "./lease.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import type { ClusterNode } from "./node.ts";
import type { AuditInput, Command } from "../fsm/mod.ts";
import { metrics } from "../metrics/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** A node with no leader in sight until `lead` is set; proposals land in `proposed`. */
function fakeNode() {
  const state = { lead: false, proposed: [] as Command[] };
  const hooks = new Set<() => void>();
  let inHooks = false;
  const node = {
    id: "n1",
    isLeader: () => state.lead,
    leaderUrl: () => null,
    leaderId: () => null,
    fsm: { member: () => null },
    // As ClusterNode: hooks run first (not re-entered), so what they propose goes before.
    beforePropose: (hook: () => void) => {
      hooks.add(hook);
      return () => hooks.delete(hook);
    },
    propose: (c: Command) => {
      if (!inHooks) {
        inHooks = true;
        for (const hook of hooks) hook();
        inHooks = false;
      }
      state.proposed.push(c);
      return Promise.resolve(null);
    },
  } as unknown as ClusterNode;
  return { node, state };
}

const rec = (i: number): AuditInput => ({
  at: i,
  principal: `p${i}`,
  role: null,
  source: "s",
  node: "n1",
  requestId: null,
  method: "POST",
  route: "/r",
  path: "/r",
  resource: null,
  code: 200,
  ms: 0,
});

async function dropped(): Promise<number> {
  return (await metrics.auditDropped.get()).values[0]?.value ?? 0;
}

testWithTimeout({
  name: "audit buffer: without a leader records wait, capped, oldest dropped and counted",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { node, state } = fakeNode();
  const buffer = new AuditBuffer(node, { intervalMs: 5, cap: 5, maxBackoffMs: 20 });
  const before = await dropped();
  for (let i = 0; i < 8; i++) buffer.record(rec(i));
  await buffer.flush(); // fails: no leader; the records go back in the buffer
  assertEquals(buffer.pending, 5);
  assertEquals(await dropped() - before, 3);
  state.lead = true;
  await buffer.flush();
  assertEquals(buffer.pending, 0);
  const sent = state.proposed.flatMap((c) => c.op === "audit.append" ? c.records : []);
  assertEquals(sent.map((r) => r.principal), ["p3", "p4", "p5", "p6", "p7"], "oldest first");
  await buffer.close();
  buffer.record(rec(9));
  assertEquals(buffer.pending, 0, "a closed buffer keeps nothing");
});

testWithTimeout({
  name: "audit buffer: on a leader records ride along with the next proposal, else wait intervalMs",
  timeoutMs: 2 * MINUTE,
}, async () => {
  const { node, state } = fakeNode();
  state.lead = true;
  const buffer = new AuditBuffer(node, { intervalMs: 50 });
  for (let i = 0; i < 3; i++) buffer.record(rec(i));
  await new Promise((r) => setTimeout(r, 5));
  assertEquals(state.proposed.length, 0, "no Raft round of their own right away");
  await node.propose({ op: "noop" } as Command);
  assertEquals(
    state.proposed.map((c) => c.op),
    ["audit.append", "noop"],
    "one batch, records first",
  );
  assertEquals((state.proposed[0] as { records: AuditInput[] }).records.length, 3);
  await new Promise((r) => setTimeout(r, 5)); // the send settles
  buffer.record(rec(3));
  await new Promise((r) => setTimeout(r, 120));
  assertEquals(state.proposed.map((c) => c.op), ["audit.append", "noop", "audit.append"]);
  await buffer.close();
});

testWithTimeout({
  name: "audit: each VM a drain moves is recorded as system:drain by the node that moved it",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const c = await TestCluster.start();
  const hosts = c.completeMigrations();
  try {
    await c.addHost("n2");
    await c.addHost("n3");
    await c.vm({ name: "a", node: "n2" });
    const op = await drainNode(c.node, "n2", "drain", new LeaseTable(() => 1), "ops");
    await c.until("the drain to finish", () => c.node.fsm.operation(op.id)?.state !== "running");
    await auditBufferOf(c.node).flush();
    await c.until("the record committed", () => c.node.fsm.auditEntries().length > 0);
    const [e] = c.node.fsm.auditEntries({ principal: "system:drain" });
    assertEquals([e.route, e.resource, e.detail, e.node, e.method], [
      "drain.move",
      "vm/a",
      `to ${c.node.fsm.vm("a")!.node}`,
      "n1",
      "SYSTEM",
    ]);
  } finally {
    hosts.stop();
    await c.stop();
  }
});

testWithTimeout({
  name: "audit: each move of a rebalance is recorded as system:rebalance",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const c = await TestCluster.start({ memoryMiB: 4_096 });
  const hosts = c.completeMigrations();
  try {
    await c.addHost("n2", { memoryMiB: 4_096 });
    for (const name of ["r1", "r2", "r3", "r4"]) await c.vm({ name, node: "n2", memoryMiB: 1_024 });
    const plan = rebalancePlan(c.node);
    const op = await applyRebalance(c.node, plan, "ops");
    await c.until(
      "the rebalance to finish",
      () => c.node.fsm.operation(op.id)?.state !== "running",
    );
    await auditBufferOf(c.node).flush();
    const recorded = () => c.node.fsm.auditEntries({ principal: "system:rebalance" });
    await c.until("the records committed", () => recorded().length === plan.moves.length);
    assert(plan.moves.length > 0);
    assertEquals(
      recorded().map((e) => e.resource).sort(),
      plan.moves.map((m) => `vm/${m.vm}`).sort(),
    );
    for (const e of recorded()) assertEquals([e.route, e.node], ["rebalance.move", "n1"]);
  } finally {
    hosts.stop();
    await c.stop();
  }
});
