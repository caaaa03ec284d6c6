/**
 * Bounded state through the API, on a real in-process node (SQLite log and
 * state, the real config routes and error handler):
 * - back-pressure: a leader refusing proposals beyond maxUncommittedBytes
 *   answers 503 with Retry-After instead of buffering;
 * - retention: pruned configuration versions are named in history and a
 *   rollback to one is refused with the retention that removed it.
 */
import { Hono } from "hono";
import { bootstrapCluster, ClusterNode } from "../core/cluster/mod.ts";
import { configRoutes } from "../api/routes/config.ts";
import { errorResponse } from "../api/errors.ts";
import type { Env } from "../api/context.ts";
import { assert, assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/** A bootstrapped one-node cluster and the config API in front of it. */
async function configApi(opts: { maxUncommittedBytes?: number } = {}) {
  const dataDir = await Deno.makeTempDir();
  const { identity, adminToken } = await bootstrapCluster(dataDir, "n1", "http://127.0.0.1:1");
  const node = new ClusterNode({ dataDir, identity, ...opts });
  node.start();
  for (let i = 0; i < 100 && !node.isLeader(); i++) await new Promise((r) => setTimeout(r, 20));
  assert(node.isLeader(), "a lone voter leads");
  const app = new Hono<Env>();
  app.route("/api/v1/config", configRoutes(node));
  app.onError((err, c) => errorResponse(c, err));
  const call = (method: string, path: string, body?: unknown) =>
    app.request(`/api/v1/config${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  return { node, call };
}

testWithTimeout({
  name: "config retention: history shows what is kept; rollback to a pruned version is refused",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { node, call } = await configApi();
  try {
    assertEquals((await call("PUT", "/config.keepVersions", { value: 3 })).status, 200);
    for (let i = 0; i < 5; i++) {
      assertEquals((await call("PUT", "/cluster.description", { value: `d${i}` })).status, 200);
    }
    const history = await (await call("GET", "/history")).json();
    assertEquals(history.versions.map((v: { version: number }) => v.version), [7, 6, 5]);
    assertEquals(history.retention, { keepVersions: 3, keepDays: 0, oldest: 5, newest: 7 });
    const refused = await call("POST", "/rollback", { version: 2 });
    assertEquals(refused.status, 404);
    const body = await refused.json();
    assertEquals(
      body.error.message,
      "configuration version 2 was pruned: config.keepVersions=3 keeps versions 5–7",
    );
    assertEquals((await call("POST", "/rollback", { version: 5 })).status, 200);
    assertEquals(node.fsm.config().config["cluster.description"], "d2");
  } finally {
    await node.stop();
  }
});

testWithTimeout({
  name: "a proposal beyond the uncommitted-bytes cap gets 503 with Retry-After",
  timeoutMs: 5 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  // One byte: any proposal made while another is still uncommitted is refused.
  const { node, call } = await configApi({ maxUncommittedBytes: 1 });
  try {
    const put = (value: string) => call("PUT", "/cluster.description", { value });
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
