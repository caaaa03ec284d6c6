/**
 * Waiting for an operation on a real one-voter leader: the wait answers when the operation's
 * end is applied, woken by the change rather than by looking again and again.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import { createOperation, waitForOperation } from "./operation_service.ts";

Deno.test({
  name: "operation wait: woken by the operation's end, not by polling",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const c = await TestCluster.start();
    try {
      const op = await createOperation(c.node, {
        id: "op-wait-1",
        kind: "backup",
        target: "web",
        runner: c.node.id,
        params: {},
        by: "t",
      });
      let reads = 0;
      const read = c.node.fsm.operation.bind(c.node.fsm);
      c.node.fsm.operation = (id: string) => {
        if (id === op.id) reads++;
        return read(id);
      };
      const waiting = waitForOperation(c.node, op.id, { timeoutMs: 60_000 });
      // Other operations' changes do not wake it for nothing either.
      await createOperation(c.node, {
        id: "op-wait-2",
        kind: "backup",
        target: "db",
        runner: c.node.id,
        params: {},
        by: "t",
      });
      await new Promise((r) => setTimeout(r, 450));
      await c.node.propose({
        op: "operation.update",
        id: op.id,
        state: "succeeded",
        at: Date.now(),
      });
      const done = await waiting;
      assertEquals(done.state, "succeeded");
      // One look at the start, one when its end was applied; a poll every 100 ms would have
      // looked five times or more in the 450 ms before it.
      assert(reads <= 3, `read ${reads} times`);
    } finally {
      await c.stop();
    }
  },
});
