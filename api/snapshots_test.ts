/**
 * VM snapshots as operations, through the real API and the real snapshot runner
 * (host/snapshots/) over a one-voter cluster. The VM host's snapshot work (QMP jobs, volume
 * snapshots) is simulated here by `SimulatedSnapshotHost`, which records what a real host
 * records; the real thing runs in tests/vm_test.ts and host/vm_host_test.ts.
 *
 * - below cluster level 2 (a cluster a 0.1.0 member may be in) no operation: the call runs at
 *   once on the VM's host and answers when done (201 / 200 / its error), as 0.1.0 did
 * - refused at once, before any operation: bad input, unknown VM or snapshot, a duplicate,
 *   a memory snapshot of a stopped VM, a disk-only restore under a running QEMU, a template
 * - 202 with the operation and `Location`; the operation ends succeeded (its result names the
 *   snapshot) or failed (with the host's error)
 * - `?wait=SECONDS`: the finished call's answer (201/200), its error, or 202 while running
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import type { VmSnapshot } from "../core/fsm/mod.ts";
import { SnapshotRunner } from "../host/snapshots/mod.ts";
import {
  hostClusterOf as cluster,
  SimulatedSnapshotHost,
  stateFileOf as stateFile,
} from "../host/snapshots/testing.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { type CallResult, fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: VM snapshots are operations", ...opts }, async (t) => {
  let runner: SnapshotRunner | null = null;
  let host: SimulatedSnapshotHost | null = null;
  const { c, call, tokens } = await startTestApp((c) => {
    host = new SimulatedSnapshotHost(c);
    runner = new SnapshotRunner(cluster(c), host, stateFile(c));
    // Aborts ask every runner of the node; the others run none of these.
    return {
      snapshots: runner,
      // Below level 2 the routes call the VM host's snapshot work themselves.
      host: host as unknown as VmHost,
      migrator: { abort: () => false } as unknown as Migrator,
      backups: undefined,
    };
  }, { level: 1 }); // as release 0.1.0 made it
  const sim = host! as SimulatedSnapshotHost;
  const token = tokens.operator;
  const snaps = "/api/v1/vms/web1/snapshots";
  const ops = () => c.node.fsm.operations().length;
  const refused = async (r: Promise<CallResult>, status: number, code: string) => {
    const before = ops();
    const res = await r;
    assertEquals(res.status, status, JSON.stringify(res.body));
    assertEquals(res.body.error.code, code, JSON.stringify(res.body));
    assertEquals(ops(), before, "no operation recorded");
    return res;
  };
  const finished = async (id: string) =>
    (await call("GET", `/api/v1/operations/${id}/wait?timeoutMs=30000`, { token })).body;
  try {
    await (runner! as SnapshotRunner).start();
    await c.vm({ name: "web1", node: "n1" }, "running");

    await t.step(
      "below cluster level 2 they run at once on the VM's host, as 0.1.0 did",
      async () => {
        const before = ops();
        const made = await call("POST", snaps, { token, body: { name: "s0", memory: true } });
        assertEquals(made.status, 201, JSON.stringify(made.body));
        assertEquals([made.body.name, made.body.memory, made.body.vmState], [
          "s0",
          true,
          "running",
        ]);
        assertEquals(made.headers.get("location"), null);
        const waited = await call("POST", `${snaps}?wait=5`, { token, body: { name: "s00" } });
        assertEquals([waited.status, waited.body.name], [201, "s00"], JSON.stringify(waited.body));
        const names = () => c.node.fsm.vm("web1")!.snapshots.map((s) => s.name);
        assertEquals(names(), ["s0", "s00"]);
        const restored = await call("POST", `${snaps}/s0/restore`, { token });
        assertEquals(
          [restored.status, restored.body.name],
          [200, "web1"],
          JSON.stringify(restored),
        );
        for (const snap of ["s0", "s00"]) {
          const deleted = await call("DELETE", `${snaps}/${snap}`, { token });
          assertEquals([deleted.status, deleted.body], [200, { deleted: snap }]);
        }
        assertEquals(names(), []);
        sim.failing.add("bad0");
        const bad = await call("POST", snaps, { token, body: { name: "bad0" } });
        assertEquals([bad.status, bad.body.error.message], [409, "QEMU refused snapshot bad0"]);
        await refused(
          call("POST", snaps, { token: tokens.viewer, body: { name: "s9" } }),
          403,
          "forbidden",
        );
        await refused(
          call("POST", "/api/v1/vms/nope/snapshots", { token, body: { name: "s9" } }),
          404,
          "not_found",
        );
        assertEquals(ops(), before, "no operation recorded");
        await c.node.propose({ op: "cluster.upgrade", level: 2, at: Date.now() });
      },
    );

    await t.step(
      "202 with the operation and its URL; it succeeds naming the snapshot",
      async () => {
        const r = await call("POST", snaps, { token, body: { name: "s1" } });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals([r.body.kind, r.body.target, r.body.runner], [
          "snapshot-create",
          "web1",
          "n1",
        ]);
        assertEquals(r.headers.get("location"), `/api/v1/operations/${r.body.id}`);
        const op = await finished(r.body.id);
        assertEquals(op.state, "succeeded", JSON.stringify(op));
        assertEquals([op.result.vm, op.result.snapshot, op.result.memory], ["web1", "s1", false]);
        const list = await call("GET", snaps, { token });
        assertEquals(list.body.snapshots.map((s: VmSnapshot) => s.name), ["s1"]);
      },
    );

    await t.step("refused at once, before any operation, with today's errors", async () => {
      const post = (body: unknown, vm = "web1") =>
        call("POST", `/api/v1/vms/${vm}/snapshots`, { token, body });
      const bad = await refused(post({ name: "no spaces" }), 400, "validation");
      assertEquals(fieldsOf(bad), ["name"]);
      await refused(post({ name: "s9" }, "nope"), 404, "not_found");
      const dup = await refused(post({ name: "s1" }), 409, "conflict");
      assert(/snapshot "s1" already exists/.test(dup.body.error.message), dup.body);
      await refused(call("POST", `${snaps}/s9/restore`, { token }), 404, "not_found");
      await refused(call("DELETE", `${snaps}/s9`, { token }), 404, "not_found");
      const disk = await refused(call("POST", `${snaps}/s1/restore`, { token }), 409, "conflict");
      assert(/stop web1 before restoring a disk-only snapshot/.test(disk.body.error.message));
      const wait = await refused(
        call("POST", `${snaps}?wait=soon`, { token, body: { name: "s9" } }),
        400,
        "validation",
      );
      assertEquals(fieldsOf(wait), ["wait"]);
      await refused(
        call("POST", snaps, { token: tokens.viewer, body: { name: "s9" } }),
        403,
        "forbidden",
      );
      await c.vm({ name: "off1", node: "n1" }, "stopped");
      const mem = await refused(post({ name: "m1", memory: true }, "off1"), 409, "conflict");
      assert(/a snapshot with memory needs off1 running/.test(mem.body.error.message));
      await c.node.propose({
        op: "vm.update",
        name: "off1",
        changes: { template: true },
        by: "t",
        at: 1,
      });
      await refused(post({ name: "t1" }, "off1"), 409, "conflict");
    });

    await t.step("a snapshot the host fails: the operation fails with its error", async () => {
      sim.failing.add("bad");
      const r = await call("POST", snaps, { token, body: { name: "bad" } });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      const op = await finished(r.body.id);
      assertEquals(op.state, "failed", JSON.stringify(op));
      assertEquals(op.error, "QEMU refused snapshot bad");
      assertEquals(op.result.errorCode, "conflict");
      const waited = await call("POST", `${snaps}?wait=30`, { token, body: { name: "bad" } });
      assertEquals(waited.status, 409, JSON.stringify(waited.body));
      assertEquals(waited.body.error.message, "QEMU refused snapshot bad");
    });

    await t.step("?wait=SECONDS: today's answers once done, 202 while running", async () => {
      const made = await call("POST", `${snaps}?wait=30`, { token, body: { name: "s2" } });
      assertEquals(made.status, 201, JSON.stringify(made.body));
      assertEquals([made.body.name, made.body.memory, made.body.vmState], ["s2", false, "running"]);
      await c.observe("web1", "n1", "stopped");
      const restored = await call("POST", `${snaps}/s2/restore?wait=30`, { token });
      assertEquals(restored.status, 200, JSON.stringify(restored.body));
      assertEquals(restored.body.name, "web1");
      const deleted = await call("DELETE", `${snaps}/s2?wait=30`, { token });
      assertEquals([deleted.status, deleted.body], [200, { deleted: "s2" }]);
      assertEquals(c.node.fsm.vm("web1")!.snapshots.map((s) => s.name), ["s1"]);

      let open!: () => void;
      sim.gate = new Promise((r) => open = r);
      const late = await call("POST", `${snaps}?wait=1`, { token, body: { name: "s3" } });
      assertEquals(late.status, 202, JSON.stringify(late.body));
      assertEquals(late.body.state, "running");
      assertEquals(late.headers.get("location"), `/api/v1/operations/${late.body.id}`);
      const again = await refused(
        call("POST", snaps, { token, body: { name: "s3" } }),
        409,
        "conflict",
      );
      assert(again.body.error.message.includes(late.body.id), "names the operation taking it");
      const abort = await call("POST", `/api/v1/operations/${late.body.id}/abort`, { token });
      assertEquals(abort.status, 409, JSON.stringify(abort.body));
      open();
      sim.gate = null;
      assertEquals((await finished(late.body.id)).state, "succeeded");
    });

    await t.step(
      "an operation its host ran when its node stopped fails at the next start",
      async () => {
        let open!: () => void;
        sim.gate = new Promise((r) => open = r);
        const r = await call("POST", snaps, { token, body: { name: "s4" } });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        const first = runner! as SnapshotRunner;
        const recorded = () => {
          try {
            return Deno.readTextFileSync(stateFile(c)).includes(r.body.id);
          } catch {
            return false;
          }
        };
        await c.until("the host runs it, its state file naming it", recorded);
        first.stop(); // as the node process stopping: its state file still names the operation
        const next = new SnapshotRunner(cluster(c), sim, stateFile(c));
        await next.start();
        try {
          const op = await finished(r.body.id);
          assertEquals([op.state, op.error], [
            "failed",
            "interrupted: its node restarted while it ran",
          ]);
        } finally {
          next.stop();
          open();
          sim.gate = null;
        }
      },
    );
  } finally {
    (runner as SnapshotRunner | null)?.stop();
    await c.stop();
  }
});
