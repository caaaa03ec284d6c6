/** `?wait=SECONDS` on VM lifecycle calls: 200 once the VM settles, 202 while on its way. */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: lifecycle calls wait with ?wait=SECONDS", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.operator;
  const desired = (name: string, want: string) => () => c.node.fsm.vm(name)?.desired === want;
  try {
    await c.vm({ name: "w1", node: "n1" }, "stopped");

    await t.step("start?wait answers 200 once the host reports it running", async () => {
      const answer = call("POST", "/api/v1/vms/w1/start?wait=30", { token });
      await c.until("start committed", desired("w1", "running"));
      await c.observe("w1", "n1", "running");
      const r = await answer;
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals(r.body.state, "running");
    });

    await t.step("stop?wait that runs out answers 202 with the VM still on its way", async () => {
      const r = await call("POST", "/api/v1/vms/w1/stop?wait=1", { token });
      assertEquals(r.status, 202, JSON.stringify(r.body));
      assertEquals([r.body.desired, r.body.state], ["stopped", "running"]);
    });

    await t.step(
      "without ?wait the answer comes at once (202, the record, its operation)",
      async () => {
        const r = await call("POST", "/api/v1/vms/w1/start", { token });
        assertEquals(r.status, 202, JSON.stringify(r.body));
        assertEquals([r.body.desired, r.body.operation?.kind], ["running", "start"]);
      },
    );

    await t.step("a failure from before the start is not its answer; a new one is", async () => {
      await c.observe("w1", "n1", "failed", "start failed: old");
      const stale = await call("POST", "/api/v1/vms/w1/start?wait=1", { token });
      assertEquals(stale.status, 202, JSON.stringify(stale.body));
      const before = c.node.fsm.vm("w1")!.updatedAt;
      const answer = call("POST", "/api/v1/vms/w1/start?wait=30", { token });
      await c.until("start committed", () => c.node.fsm.vm("w1")!.updatedAt !== before);
      await c.observe("w1", "n1", "failed", "start failed: new");
      const r = await answer;
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals([r.body.state, r.body.reason], ["failed", "start failed: new"]);
    });

    await t.step("delete?wait answers once the host removed it", async () => {
      const answer = call("DELETE", "/api/v1/vms/w1?force=true&wait=30", { token });
      await c.until("delete committed", desired("w1", "deleted"));
      await c.node.propose({ op: "vm.remove", name: "w1", node: "n1", at: Date.now() });
      const r = await answer;
      assertEquals(r.status, 200, JSON.stringify(r.body));
      assertEquals([r.body.name, r.body.deleted, r.body.operation?.state], [
        "w1",
        true,
        "succeeded",
      ]);
    });

    await t.step("create?wait: 201 once running, 202 while only scheduled", async () => {
      const body = { name: "w2", image: "img", memoryMiB: 64, node: "n1" };
      const answer = call("POST", "/api/v1/vms?wait=30", { token, body });
      await c.until("create committed", () => !!c.node.fsm.vm("w2"));
      await c.observe("w2", "n1", "running");
      const r = await answer;
      assertEquals(r.status, 201, JSON.stringify(r.body));
      assertEquals(r.body.state, "running");
      const late = await call("POST", "/api/v1/vms?wait=1", {
        token,
        body: { ...body, name: "w3" },
      });
      assertEquals(late.status, 202, JSON.stringify(late.body));
      assertEquals(late.body.state, "scheduled");
    });

    await t.step("a bad wait is refused naming the parameter, and nothing changes", async () => {
      const before = await c.vm({ name: "w4", node: "n1" }, "running");
      const r = await call("POST", "/api/v1/vms/w4/stop?wait=soon", { token });
      assertEquals(r.status, 400, JSON.stringify(r.body));
      assert(fieldsOf(r).includes("wait"), JSON.stringify(r.body));
      assertEquals(c.node.fsm.vm("w4"), before);
    });
  } finally {
    await c.stop();
  }
});
