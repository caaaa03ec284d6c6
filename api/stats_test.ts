/** `/api/v1/{vms,nodes}/:name/stats`: input checks and answer shape (the sampling is in tests/). */
import { assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { name: "API: stats refuse unknown since and step, naming them", ...opts },
  async () => {
    const { c, call, tokens } = await startTestApp();
    const token = tokens.viewer;
    try {
      const self = c.node.id;
      for (const path of ["/api/v1/vms/nope/stats", `/api/v1/nodes/${self}/stats`]) {
        for (
          const [q, field] of [["step=7s", "step"], ["since=soon", "since"], ["since=90d", "since"]]
        ) {
          const r = await call("GET", `${path}?${q}`, { token });
          assertEquals(r.status, 400, `${path}?${q}`);
          assertEquals(fieldsOf(r), [field]);
        }
        const tooFine = await call("GET", `${path}?since=2d&step=10s`, { token });
        assertEquals([tooFine.status, fieldsOf(tooFine)], [400, ["step"]]);
      }
      // Valid input: an unknown VM is 404; a host without a sampler answers with no samples.
      assertEquals((await call("GET", "/api/v1/vms/nope/stats", { token })).status, 404);
      const n = await call("GET", `/api/v1/nodes/${self}/stats?since=1h&step=1m`, { token });
      assertEquals(n.status, 200);
      assertEquals(n.body.node, self);
      assertEquals([n.body.current, n.body.points, n.body.vms], [null, [], []]);
      assertEquals([n.body.step, n.body.stepSeconds], ["1m", 60]);
      assertEquals((await call("GET", "/api/v1/nodes/ghost/stats", { token })).status, 404);
      assertEquals((await call("GET", `/api/v1/nodes/${self}/stats`)).status, 401);
    } finally {
      await c.stop();
    }
  },
);
