/**
 * VM lifecycle actions as operations (./vm_operations.ts): made in the desired-state change's
 * own entry with an id from its index, finished by the VM's reports the same way on every
 * replica, superseded by a later change, ignored below cluster level 2.
 */
import { Replicas } from "../testing/fsm.ts";
import { testVmSpec } from "../testing/fixtures.ts";
import { assert, assertEquals } from "../testing/assert.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type {
  Command,
  OperationBrief,
  OperationRecord,
  PlannedCreateResult,
  VmState,
} from "./commands.ts";
import { assertCommandAllowed } from "../upgrade/mod.ts";
import { FeatureUnavailableError } from "../errors/mod.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/** Operation `id`, the same on both replicas. */
function opOf(r: Replicas, id: string): OperationRecord | null {
  return r.alike((fsm) => fsm.operation(id), `operation ${id}`);
}

/** A state with host h1 on 0.2.0, an image, at `level`, and VM `vm1` placed on h1, stopped. */
async function setUp(level: 1 | 2 = 2, keepCount = 1000): Promise<Replicas> {
  const r = new Replicas(await Deno.makeTempDir());
  r.apply({
    op: "cluster.init",
    clusterId: "c1",
    member: { name: "h1", url: "http://h1" },
    adminTokenHash: "h",
    config: { ...DEFAULT_CONFIG, "operations.keepCount": keepCount },
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
  r.apply({ op: "vm.create", vm: testVmSpec("vm1", "h1"), by: "t", at: 5 });
  report(r, "vm1", "stopped");
  return r;
}

let clock = 100;

function report(r: Replicas, name: string, state: VmState, reason?: string): void {
  r.apply({ op: "vm.observed", name, node: "h1", state, reason, at: ++clock });
}

/** A tracked desired-state change; returns the operation its answer names. */
function desire(r: Replicas, desired: "running" | "stopped" | "deleted"): OperationBrief {
  const v = r.apply({
    op: "vm.desired",
    name: "vm1",
    desired,
    force: true,
    track: { requestId: "req-1" },
    by: "alice",
    at: ++clock,
  }) as { operation?: OperationBrief };
  assert(v.operation, `the ${desired} answer names its operation`);
  return v.operation;
}

function restart(r: Replicas): OperationBrief {
  const gen = r.a.vm("vm1")!.generation;
  const v = r.apply({
    op: "vm.update",
    name: "vm1",
    changes: { generation: gen + 1 },
    track: {},
    by: "alice",
    at: ++clock,
  }) as { operation?: OperationBrief };
  assert(v.operation, "the restart answer names its operation");
  return v.operation;
}

testWithTimeout({
  name: "a start is an operation made in its own entry and finished by the run report",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  const brief = desire(r, "running");
  assertEquals(brief, { id: `vmop-${r.index}`, kind: "start", state: "running" });
  const op = opOf(r, brief.id)!;
  assertEquals([op.kind, op.target, op.runner, op.by, op.requestId], [
    "start",
    "vm1",
    "h1",
    "alice",
    "req-1",
  ]);
  report(r, "vm1", "starting");
  assertEquals(opOf(r, brief.id)!.state, "running", "starting is not running yet");
  report(r, "vm1", "running");
  const done = opOf(r, brief.id)!;
  assertEquals(done.state, "succeeded");
  assertEquals(done.result, { state: "running", node: "h1" });
  // A start of a running VM has nothing to wait for.
  assertEquals(desire(r, "running").state, "succeeded");
  r.close();
});

testWithTimeout({
  name: "a restart counts only a run after the VM left running: a late report does not finish it",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  desire(r, "running");
  report(r, "vm1", "running");
  const brief = restart(r);
  assertEquals([brief.kind, brief.state], ["restart", "running"]);
  report(r, "vm1", "running"); // the old QEMU's report, committed after the restart
  assertEquals(opOf(r, brief.id)!.state, "running", "a stale running report must not finish it");
  report(r, "vm1", "stopping", "restarting");
  assertEquals(opOf(r, brief.id)!.state, "running");
  report(r, "vm1", "starting");
  report(r, "vm1", "running");
  assertEquals(opOf(r, brief.id)!.state, "succeeded");
  r.close();
});

testWithTimeout({
  name: "a later change supersedes a pending operation; a stop ends when the VM stopped",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  const start = desire(r, "running");
  report(r, "vm1", "starting");
  const stop = desire(r, "stopped");
  const superseded = opOf(r, start.id)!;
  assertEquals(superseded.state, "aborted");
  assertEquals(superseded.result, { supersededBy: stop.id });
  assert(superseded.error?.includes(stop.id), superseded.error ?? "no error");
  report(r, "vm1", "running"); // on its way down: not what a stop waits for
  assertEquals(opOf(r, stop.id)!.state, "running");
  assertEquals(opOf(r, start.id)!.state, "aborted", "a finished operation never changes");
  report(r, "vm1", "stopped");
  assertEquals(opOf(r, stop.id)!.state, "succeeded");
  // A stop of a stopped VM is done at once.
  assertEquals(desire(r, "stopped").state, "succeeded");
  r.close();
});

testWithTimeout({
  name: "a start fails with the VM's reason; a failure it showed before does not count",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  const first = desire(r, "running");
  report(r, "vm1", "failed", "start failed: no kernel");
  const failed = opOf(r, first.id)!;
  assertEquals([failed.state, failed.error], ["failed", "start failed: no kernel"]);
  const again = desire(r, "running");
  report(r, "vm1", "failed", "start failed: no kernel"); // the same failure, reported again
  assertEquals(opOf(r, again.id)!.state, "running");
  report(r, "vm1", "starting");
  report(r, "vm1", "failed", "start failed: no kernel");
  assertEquals(opOf(r, again.id)!.state, "failed", "failed again after trying");
  r.close();
});

testWithTimeout({
  name: "a delete ends when the host removed the VM; an unplaced VM's at once",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  const del = desire(r, "deleted");
  assertEquals([del.kind, del.state], ["delete", "running"]);
  r.apply({ op: "vm.remove", name: "vm1", node: "h1", at: ++clock });
  assertEquals(opOf(r, del.id)!.state, "succeeded");

  r.apply({ op: "vm.create", vm: testVmSpec("vm1", null!), by: "t", at: ++clock });
  const now = desire(r, "deleted");
  assertEquals(now.state, "succeeded", "nothing to wait for: the VM went with the entry");
  assertEquals(r.a.vm("vm1"), null);
  r.close();
});

testWithTimeout({
  name: "plan.apply: a create that starts is an operation per VM; one created stopped is not",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp();
  const value = r.apply({
    op: "plan.apply",
    creates: [
      { vm: testVmSpec("a1", "h1", { desired: "running" }), by: "t", track: {} },
      { vm: testVmSpec("a2", "h1", { desired: "stopped" }), by: "t", track: {} },
      { vm: testVmSpec("a3", "h1", { desired: "running" }), by: "t", track: {} },
    ],
    at: ++clock,
  }) as { results: PlannedCreateResult[] };
  const ops = value.results.map((x) => x.ok ? x.operation?.id : "refused");
  assertEquals(ops, [`vmop-${r.index}-0`, undefined, `vmop-${r.index}-2`]);
  r.apply({ op: "vm.observed", name: "a3", node: "h1", state: "running", at: ++clock });
  assertEquals(opOf(r, `vmop-${r.index - 1}-2`)!.state, "succeeded");
  assertEquals(opOf(r, `vmop-${r.index - 1}-0`)!.state, "running");
  r.close();
});

testWithTimeout({
  name: "below level 2 a tracked change makes no operation, and the leader refuses to propose one",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp(1);
  const v = r.apply({
    op: "vm.desired",
    name: "vm1",
    desired: "running",
    track: {},
    by: "alice",
    at: ++clock,
  }) as { operation?: unknown; desired: string };
  assertEquals([v.operation, v.desired], [undefined, "running"], "applied as release 0.1.0 does");
  assertEquals(r.a.operations(), []);
  assert(!/"vm_operation/.test(r.a.snapshotData()), "no rows an older release cannot restore");
  let refused: unknown = null;
  try {
    assertCommandAllowed(
      { op: "vm.desired", name: "vm1", desired: "stopped", track: {}, by: "a", at: 1 } as Command,
      r.a,
    );
  } catch (err) {
    refused = err;
  }
  assert(refused instanceof FeatureUnavailableError, String(refused));
  const untracked: Command = { op: "vm.desired", name: "vm1", desired: "stopped", by: "a", at: 1 };
  assertCommandAllowed(untracked, r.a);
  r.close();
});

testWithTimeout({
  name: "finished lifecycle operations stay within operations.keepCount",
  timeoutMs: MINUTE,
}, async () => {
  const r = await setUp(2, 100);
  for (let i = 0; i < 150; i++) {
    desire(r, "running");
    report(r, "vm1", "running");
    desire(r, "stopped");
    report(r, "vm1", "stopped");
  }
  const count = (r.a.db.prepare("SELECT count(*) AS n FROM operations").get() as { n: number }).n;
  // 600 made; pruned to 100 about every 10 (pruneEvery: 10 % of keepCount).
  assert(count >= 100 && count <= 150, `${count} operations kept, keepCount 100`);
  assertEquals(r.a.snapshotData(), r.b.snapshotData(), "both replicas pruned the same rows");
  r.close();
});
