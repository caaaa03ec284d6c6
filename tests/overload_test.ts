/**
 * Back-pressure through the API: a real node (SQLite log and state, the real
 * config routes and error handler) whose leader refuses proposals beyond
 * maxUncommittedBytes answers 503 with Retry-After instead of buffering.
 */
import { Hono } from "hono";
import { bootstrapCluster, ClusterNode } from "../core/cluster/mod.ts";
import { configRoutes } from "../api/routes/config.ts";
import { errorResponse } from "../api/errors.ts";
import type { Env } from "../api/context.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";

Deno.test({
  name: "a proposal beyond the uncommitted-bytes cap gets 503 with Retry-After",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dataDir = await Deno.makeTempDir();
  const { identity, adminToken } = await bootstrapCluster(dataDir, "n1", "http://127.0.0.1:1");
  // One byte: any proposal made while another is still uncommitted is refused.
  const node = new ClusterNode({ dataDir, identity, maxUncommittedBytes: 1 });
  node.start();
  try {
    for (let i = 0; i < 100 && !node.isLeader(); i++) await new Promise((r) => setTimeout(r, 20));
    assert(node.isLeader(), "a lone voter leads");
    const app = new Hono<Env>();
    app.route("/api/v1/config", configRoutes(node));
    app.onError((err, c) => errorResponse(c, err));
    const put = (value: string) =>
      app.request("/api/v1/config/cluster.description", {
        method: "PUT",
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        body: JSON.stringify({ value }),
      });
    // Requests handled in the same event-loop turn all propose before the Ready
    // loop (a macrotask) commits the first one: every one after it is over the cap.
    const answers = await Promise.all(["a", "b", "c", "d"].map(put));
    const statuses = answers.map((r) => r.status);
    assertEquals(statuses.filter((s) => s === 200).length, 1, `statuses ${statuses}`);
    for (const r of answers.filter((r) => r.status !== 200)) {
      assertEquals(r.status, 503);
      assertEquals(r.headers.get("retry-after"), "1");
      const body = await r.json();
      assertEquals(body.error.code, "unavailable");
      assert(/busy: proposal dropped/.test(body.error.message), body.error.message);
    }
    // Once the first write committed, the budget is free again.
    assertEquals((await put("e")).status, 200);
    assertEquals(node.fsm.config().config["cluster.description"], "e");
  } finally {
    await node.stop();
  }
});
