/** Liveness, readiness and Prometheus metrics (no auth, as scrapers expect). */
import { Hono } from "hono";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { registry } from "../../core/metrics/mod.ts";
import type { Env } from "../context.ts";

export function healthRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.get("/healthz", (c) => c.json({ status: "ok", node: node.id }));
  app.get("/readyz", (c) => {
    const s = node.status();
    const ready = s.leader !== null && s.appliedIndex > 0;
    return c.json({ ready, leader: s.leader, appliedIndex: s.appliedIndex }, ready ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    c.header("content-type", registry.contentType);
    return c.body(await registry.metrics());
  });
  return app;
}
