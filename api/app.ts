/** The Hono application served by every node. */
import { Hono } from "hono";
import type { ClusterNode, LeaseTable } from "../core/cluster/mod.ts";
import { metrics } from "../core/metrics/mod.ts";
import { NotFoundError } from "../core/errors/mod.ts";
import { errorResponse } from "./errors.ts";
import type { Env } from "./context.ts";
import { peerIdentity } from "./auth.ts";
import { healthRoutes } from "./routes/health.ts";
import { clusterRoutes } from "./routes/cluster.ts";
import { configRoutes } from "./routes/config.ts";
import { nodeRoutes } from "./routes/nodes.ts";
import { internalRoutes } from "./routes/internal.ts";
import { blobRoutes, imageRoutes } from "./routes/images.ts";
import { vmRoutes } from "./routes/vms.ts";
import { consoleRoutes } from "./routes/console.ts";
import { groupRoutes } from "./routes/groups.ts";
import { networkRoutes } from "./routes/networks.ts";
import { securityGroupRoutes } from "./routes/security_groups.ts";
import { floatingIpRoutes, routerRoutes } from "./routes/routers.ts";
import { poolRoutes } from "./routes/pools.ts";
import { volumeRoutes } from "./routes/volumes.ts";
import type { BlobStore } from "../host/storage/mod.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { operationRoutes } from "./routes/operations.ts";
import { accessLog } from "./access_log.ts";
import { auditRequests } from "./audit.ts";
import { auditRoutes } from "./routes/audit.ts";
import { tokenRoutes } from "./routes/tokens.ts";
import { eventRoutes } from "./routes/events.ts";
import { backupRoutes, backupScheduleRoutes, backupTargetRoutes } from "./routes/backups.ts";
import { alertRoutes } from "./routes/alerts.ts";
import { versionRoutes } from "./routes/version.ts";
import type { BackupRunner } from "../host/backup/mod.ts";
import type { SnapshotRunner } from "../host/snapshots/mod.ts";
import type { MetricsSampler } from "../host/metrics/mod.ts";
import { openApiRoutes } from "./openapi/mod.ts";
import { uiRoutes } from "./ui_assets.ts";

export interface AppDeps {
  blobs: BlobStore;
  host: VmHost;
  leases: LeaseTable;
  migrator: Migrator;
  /** Runs this host's backup, restore and verify operations (host/backup/). */
  backups?: BackupRunner;
  /** Runs this host's VM snapshot operations (host/snapshots/). */
  snapshots?: SnapshotRunner;
  /** This host's metrics sampler and history (host/metrics/); absent on a simulated host. */
  stats?: MetricsSampler;
  /** The built dashboard served at /ui/ (default: ui/dist of this checkout). */
  uiDir?: string;
}

export function createApp(node: ClusterNode, deps: AppDeps): Hono<Env> {
  const app = new Hono<Env>();

  app.use("*", accessLog());
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    await next();
    const route = c.req.routePath || "unmatched";
    metrics.httpRequests.inc({ method: c.req.method, route, status: String(c.res.status) });
    metrics.httpSeconds.observe({ method: c.req.method, route }, (performance.now() - t0) / 1000);
  });

  // Who is asking (peer member, client address) before any route decides anything.
  app.use("*", async (c, next) => {
    c.set("node", node);
    await next();
  }, peerIdentity(node));

  app.use("/api/v1/*", auditRequests(node));

  app.route("/", healthRoutes(node));
  app.route("/internal", internalRoutes(node, deps));
  app.route("/api/v1/cluster", clusterRoutes(node));
  app.route("/api/v1/config", configRoutes(node));
  app.route("/api/v1/nodes", nodeRoutes(node, deps.leases, deps.stats));
  app.route("/api/v1/images", imageRoutes(node, deps.blobs));
  // Before the VM routes: their bearer check reads the header only, and a browser's
  // WebSocket can send its token in the query alone.
  app.route("/api/v1/vms", consoleRoutes(node, deps.host));
  app.route("/api/v1/vms", vmRoutes(node, deps.host, deps.stats));
  app.route("/api/v1/groups", groupRoutes(node));
  app.route("/api/v1/networks", networkRoutes(node));
  app.route("/api/v1/security-groups", securityGroupRoutes(node));
  app.route("/api/v1/routers", routerRoutes(node));
  app.route("/api/v1/floating-ips", floatingIpRoutes(node));
  app.route("/api/v1/pools", poolRoutes(node, deps.host));
  app.route("/api/v1/volumes", volumeRoutes(node, deps.host));
  app.route("/api/v1/backup-targets", backupTargetRoutes(node));
  app.route("/api/v1/backups", backupRoutes(node));
  app.route("/api/v1/backup-schedules", backupScheduleRoutes(node));
  app.route("/api/v1/alerts", alertRoutes(node));
  const runners = [deps.migrator, deps.backups, deps.snapshots].filter((r) => r !== undefined);
  app.route("/api/v1/operations", operationRoutes(node, runners));
  app.route("/api/v1/blobs", blobRoutes(node, deps.blobs));
  app.route("/api/v1/audit", auditRoutes(node));
  app.route("/api/v1/tokens", tokenRoutes(node));
  app.route("/api/v1/events", eventRoutes(node));
  app.route("/api/v1/version", versionRoutes(node));
  app.get("/ui", (c) => c.redirect("/ui/", 301));
  app.route("/ui", uiRoutes(deps.uiDir));
  app.route("/api/v1", openApiRoutes(app));

  app.notFound((c) =>
    errorResponse(c, new NotFoundError("route", `${c.req.method} ${c.req.path}`))
  );
  app.onError((err, c) => errorResponse(c, err));
  return app;
}
