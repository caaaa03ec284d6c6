/** Liveness, readiness and Prometheus metrics (no auth, as scrapers expect). */
import { Hono } from "hono";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { registry } from "../../core/metrics/mod.ts";
import type { Env } from "../context.ts";

export function healthRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.get("/healthz", (c) => c.json({ status: "ok", node: node.id }));
  // Ready means this node can do its whole job: the cluster has a leader, the local
  // replica holds state, and this node is a registered host whose accelerator is known
  // (until then a VM placed here could not start, and placement passes it over).
  app.get("/readyz", (c) => {
    const s = node.status();
    const host = hostReadiness(node);
    const ready = s.leader !== null && s.appliedIndex > 0 && host === "registered";
    return c.json(
      { ready, leader: s.leader, appliedIndex: s.appliedIndex, host },
      ready ? 200 : 503,
    );
  });
  app.get("/metrics", async (c) => {
    c.header("content-type", registry.contentType);
    return c.body(await registry.metrics());
  });
  return app;
}

/** Whether this node's host is in the replicated state, and with a decided accelerator. */
function hostReadiness(node: ClusterNode): "unregistered" | "probing" | "registered" {
  const inventory = node.fsm.node(node.id)?.inventory;
  if (!inventory) return "unregistered";
  return inventory.accel === null ? "probing" : "registered";
}
