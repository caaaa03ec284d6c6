/** Liveness, readiness and Prometheus metrics (no auth, as scrapers expect). */
import { Hono } from "hono";
import { type ClusterNode, readinessOf } from "../../core/cluster/mod.ts";
import { registry } from "../../core/metrics/mod.ts";
import type { Env } from "../context.ts";

export function healthRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.get("/healthz", (c) => c.json({ status: "ok", node: node.id }));
  // Ready as core/cluster/readiness.ts defines it (also what systemd is told).
  app.get("/readyz", (c) => {
    const r = readinessOf(node);
    return c.json(r, r.ready ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    c.header("content-type", registry.contentType);
    return c.body(await registry.metrics());
  });
  return app;
}
