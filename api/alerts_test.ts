/**
 * Alert rules through the real API on a one-voter cluster: bad rules are 400 naming the field
 * (an unknown metric's message lists the valid ones) and store nothing; a good rule is created,
 * shown, patched, listed and deleted.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

testWithTimeout({
  name: "API: bad alert rules are refused naming the field; rules CRUD",
  timeoutMs: 2 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const { c, call, tokens } = await startTestApp();
  const as = { token: tokens.operator };
  const ok = { name: "hot", metric: "vm.cpu", above: 90, for: "5m" };
  try {
    const cases: [unknown, string[]][] = [
      [{ ...ok, metric: "vm.cpux" }, ["metric"]],
      [{ ...ok, above: -1 }, ["above"]],
      [{ name: "hot", metric: "vm.cpu" }, ["above"]],
      [{ ...ok, below: 5 }, ["below"]],
      [{ ...ok, for: "5 minutes" }, ["for"]],
      [{ ...ok, for: "2d" }, ["for"]],
      [{ ...ok, webhook: "ftp://example.com/x" }, ["webhook"]],
      [{ ...ok, webhook: "not a url" }, ["webhook"]],
      [{ ...ok, name: "Hot!" }, ["name"]],
      [{ ...ok, above: "90" }, ["above"]],
      [{ ...ok, extra: 1 }, ["body"]],
      [{ name: "c", metric: "cluster.vms.failed", above: 0, labels: { a: "b" } }, ["labels"]],
    ];
    for (const [body, fields] of cases) {
      const r = await call("POST", "/api/v1/alerts/rules", { ...as, body });
      assertEquals([r.status, fieldsOf(r)], [400, fields], JSON.stringify([body, r.body]));
    }
    const unknown = await call("POST", "/api/v1/alerts/rules", {
      ...as,
      body: { ...ok, metric: "nope" },
    });
    assert(unknown.body.error.message.includes("cluster.vms.failed"), unknown.body.error.message);
    assertEquals((await call("GET", "/api/v1/alerts/rules", as)).body.rules, []);

    const created = await call("POST", "/api/v1/alerts/rules", {
      ...as,
      body: { ...ok, labels: { tier: "web" }, webhook: "http://127.0.0.1:9/hook" },
    });
    assertEquals(created.status, 201, JSON.stringify(created.body));
    assertEquals(created.body.comparison, "above");
    assertEquals(created.body.threshold, 90);
    assertEquals(created.body.forSeconds, 300);
    assertEquals(
      (await call("POST", "/api/v1/alerts/rules", { ...as, body: ok })).status,
      409,
    );
    const viewer = { token: tokens.viewer };
    assertEquals((await call("GET", "/api/v1/alerts/rules/hot", viewer)).body.firing, []);
    assertEquals(
      (await call("POST", "/api/v1/alerts/rules", { ...viewer, body: { ...ok, name: "x" } }))
        .status,
      403,
    );
    const patched = await call("PATCH", "/api/v1/alerts/rules/hot", {
      ...as,
      body: { below: 1, enabled: false },
    });
    assertEquals([patched.body.comparison, patched.body.threshold, patched.body.enabled], [
      "below",
      1,
      false,
    ]);
    assertEquals(
      fieldsOf(await call("PATCH", "/api/v1/alerts/rules/hot", { ...as, body: { for: "x" } })),
      ["for"],
    );
    assertEquals((await call("GET", "/api/v1/alerts?all=true", viewer)).body.alerts, []);
    assertEquals(fieldsOf(await call("GET", "/api/v1/alerts?all=maybe", viewer)), ["all"]);
    assert((await call("GET", "/api/v1/alerts/metrics", viewer)).body.metrics.length > 10);
    assertEquals((await call("DELETE", "/api/v1/alerts/rules/hot", as)).body.deleted, true);
    assertEquals((await call("DELETE", "/api/v1/alerts/rules/hot", as)).status, 404);
  } finally {
    await c.stop();
  }
});
