/**
 * VM lifecycle calls as operations (cluster level 2): 202 with the VM, its operation and a
 * `Location` naming it; the operation ends as the host reports; `?wait=SECONDS` still answers
 * 200 (201 for a create) once it ended, now on restart too.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { name: "API: VM lifecycle calls answer with an operation", ...opts },
  async (t) => {
    const { c, call, tokens } = await startTestApp();
    const token = tokens.operator;
    const opOf = async (id: string) => {
      const r = await call("GET", `/api/v1/operations/${id}`, { token });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      return r.body;
    };
    /** A 202 naming its operation, in the body and in `Location`; returns the operation's id. */
    const accepted = (r: { status: number; headers: Headers; body: Record<string, unknown> }) => {
      assertEquals(r.status, 202, JSON.stringify(r.body));
      const op = r.body.operation as { id: string; state: string };
      assert(op?.id, `the answer names its operation: ${JSON.stringify(r.body)}`);
      assertEquals(r.headers.get("location"), `/api/v1/operations/${op.id}`);
      return op.id;
    };
    try {
      await c.node.propose({ op: "cluster.upgrade", level: 2, at: Date.now() });
      await c.vm({ name: "o1", node: "n1" }, "stopped");

      await t.step(
        "start: 202, the VM as before plus its operation; it ends when running",
        async () => {
          const r = await call("POST", "/api/v1/vms/o1/start", { token });
          const id = accepted(r);
          assertEquals([r.body.name, r.body.node, r.body.desired], ["o1", "n1", "running"]);
          const op = await opOf(id);
          assertEquals([op.kind, op.target, op.state, op.by], [
            "start",
            "o1",
            "running",
            "operator-token",
          ]);
          assert(op.requestId, "the operation names the request that started it");
          await c.observe("o1", "n1", "starting");
          assertEquals((await opOf(id)).state, "running");
          await c.observe("o1", "n1", "running");
          const done = await call("GET", `/api/v1/operations/${id}/wait?timeoutMs=30000`, {
            token,
          });
          assertEquals([done.status, done.body.state], [200, "succeeded"]);
        },
      );

      await t.step("restart?wait: 200 only once a new run is reported", async () => {
        const answer = call("POST", "/api/v1/vms/o1/restart?wait=30", { token });
        const gen = c.node.fsm.vm("o1")!.generation;
        await c.until("restart committed", () => c.node.fsm.vm("o1")!.generation > gen);
        await c.observe("o1", "n1", "running"); // the old QEMU's, late: not the answer
        await c.observe("o1", "n1", "stopping", "restarting");
        await c.observe("o1", "n1", "starting");
        await c.observe("o1", "n1", "running");
        const r = await answer;
        assertEquals(r.status, 200, JSON.stringify(r.body));
        const op = r.body.operation as { kind: string; state: string };
        assertEquals([op.kind, op.state, r.body.state], ["restart", "succeeded", "running"]);
        const late = await call("POST", "/api/v1/vms/o1/restart?wait=1", { token });
        assertEquals(late.status, 202, "no new run reported within the wait");
        assertEquals((late.body.operation as { state: string }).state, "running");
      });

      await t.step("stop: 202; a later start supersedes it", async () => {
        const stop = accepted(await call("POST", "/api/v1/vms/o1/stop", { token }));
        const start = accepted(await call("POST", "/api/v1/vms/o1/start", { token }));
        const old = await opOf(stop);
        assertEquals([old.state, old.result], ["aborted", { supersededBy: start }]);
      });

      await t.step(
        "create: 202 with its operation; start:false stays 201 without one",
        async () => {
          const body = { name: "o2", image: "img", memoryMiB: 64, node: "n1" };
          const r = await call("POST", "/api/v1/vms", { token, body });
          const id = accepted(r);
          assertEquals([r.body.name, r.body.node], ["o2", "n1"]);
          assertEquals((await opOf(id)).kind, "create");
          await c.observe("o2", "n1", "running");
          assertEquals((await opOf(id)).state, "succeeded");
          const stopped = await call("POST", "/api/v1/vms", {
            token,
            body: { ...body, name: "o3", start: false },
          });
          assertEquals(stopped.status, 201, JSON.stringify(stopped.body));
          assertEquals(stopped.body.operation, undefined);
        },
      );

      await t.step("create?wait: 201 once running, with the operation succeeded", async () => {
        const body = { name: "o4", image: "img", memoryMiB: 64, node: "n1" };
        const answer = call("POST", "/api/v1/vms?wait=30", { token, body });
        await c.until("create committed", () => !!c.node.fsm.vm("o4"));
        await c.observe("o4", "n1", "running");
        const r = await answer;
        assertEquals(r.status, 201, JSON.stringify(r.body));
        assertEquals((r.body.operation as { state: string }).state, "succeeded");
      });

      await t.step("delete: 202; the operation succeeds once the host removed the VM", async () => {
        const id = accepted(await call("DELETE", "/api/v1/vms/o2?force=true", { token }));
        assertEquals((await opOf(id)).kind, "delete");
        await c.node.propose({ op: "vm.remove", name: "o2", node: "n1", at: Date.now() });
        assertEquals((await opOf(id)).state, "succeeded");
        assertEquals((await call("GET", "/api/v1/vms/o2", { token })).status, 404);
      });
    } finally {
      await c.stop();
    }
  },
);
