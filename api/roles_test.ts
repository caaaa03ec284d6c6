/**
 * Who may call which route: a table with every route of the app (a new route
 * missing from it fails the test), checked by calling each route with every
 * role. The role below the required one gets 403, the required one gets past
 * the check (whatever the handler then answers, never 401 or 403), and no
 * token gets 401. Requests aim at things that do not exist, so the allowed
 * calls change nothing that matters.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import type { Role } from "../core/fsm/mod.ts";
import { startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

/** Required role per route ("none": no bearer token; "peer": internal, not for tokens). */
const ROUTES: Record<string, Role | "none" | "peer"> = {
  "GET /healthz": "none",
  "GET /readyz": "none",
  "GET /metrics": "none",
  // The dashboard's static files hold no data (api/ui_assets.ts).
  "GET /ui": "none",
  "GET /ui/assets/:file": "none",
  "GET /ui/*": "none",
  "POST /internal/raft": "peer",
  "POST /internal/raft/snapshot": "peer",
  "POST /internal/raft/stream": "peer",
  "POST /internal/propose": "peer",
  "POST /internal/lease": "peer",
  "POST /internal/host/migrations/:op/prepare": "peer",
  "POST /internal/host/migrations/:op/finish": "peer",
  "POST /internal/host/migrations/:op/console": "peer",
  "POST /internal/host/migrations/:op/abort": "peer",
  "POST /internal/host/migrations/:op/receive": "peer",
  "GET /internal/host/volumes/:vm/:disk": "peer",
  "GET /internal/blobs/:sha256": "peer",
  "GET /internal/metrics/latest": "peer",
  // Joiners authenticate with the join token in the body.
  "POST /api/v1/cluster/join": "none",
  "GET /api/v1/cluster/ca": "none",
  // The API's shape is no secret; a token sent anyway is ignored.
  "GET /api/v1/openapi.json": "none",
  "GET /api/v1/cluster": "viewer",
  "POST /api/v1/cluster/tokens": "admin",
  "GET /api/v1/cluster/tokens": "admin",
  "DELETE /api/v1/cluster/members/:name": "admin",
  "POST /api/v1/cluster/rebalance": "operator",
  "POST /api/v1/cluster/transfer-leader": "admin",
  "POST /api/v1/cluster/backup": "admin",
  "GET /api/v1/config": "viewer",
  "GET /api/v1/config/history": "viewer",
  "GET /api/v1/config/:key": "viewer",
  "PUT /api/v1/config": "admin",
  "PATCH /api/v1/config": "admin",
  "PUT /api/v1/config/:key": "admin",
  "POST /api/v1/config/rollback": "admin",
  "GET /api/v1/nodes": "viewer",
  "GET /api/v1/nodes/:name": "viewer",
  "GET /api/v1/nodes/:name/stats": "viewer",
  "POST /api/v1/nodes/:name/cordon": "operator",
  "POST /api/v1/nodes/:name/uncordon": "operator",
  "POST /api/v1/nodes/:name/drain": "operator",
  "POST /api/v1/nodes/:name/evacuate": "operator",
  "PUT /api/v1/nodes/:name/bridge-mappings": "admin",
  "PUT /api/v1/nodes/:name/meta": "operator",
  "GET /api/v1/images": "viewer",
  "GET /api/v1/images/:name": "viewer",
  "POST /api/v1/images": "operator",
  "DELETE /api/v1/images/:name": "operator",
  "POST /api/v1/images/:name/pull": "operator",
  "GET /api/v1/vms": "viewer",
  "GET /api/v1/vms/:name": "viewer",
  "GET /api/v1/vms/:name/wait": "viewer",
  "POST /api/v1/vms": "operator",
  "POST /api/v1/vms/:name/start": "operator",
  "POST /api/v1/vms/:name/stop": "operator",
  "POST /api/v1/vms/:name/restart": "operator",
  "DELETE /api/v1/vms/:name": "operator",
  "POST /api/v1/vms/:name/resize": "operator",
  "POST /api/v1/vms/:name/clone": "operator",
  "POST /api/v1/vms/:name/migrate": "operator",
  "POST /api/v1/vms/:name/template": "operator",
  "GET /api/v1/vms/:name/console": "operator",
  // What guests print or draw, logged or live: one role for all of it.
  "GET /api/v1/vms/:name/console/ws": "operator",
  "GET /api/v1/vms/:name/vnc/ws": "operator",
  "GET /api/v1/vms/:name/snapshots": "viewer",
  "POST /api/v1/vms/:name/snapshots": "operator",
  "POST /api/v1/vms/:name/snapshots/:snap/restore": "operator",
  "DELETE /api/v1/vms/:name/snapshots/:snap": "operator",
  "GET /api/v1/vms/:name/nics": "viewer",
  "GET /api/v1/vms/:name/stats": "viewer",
  "POST /api/v1/vms/:name/nics": "operator",
  "DELETE /api/v1/vms/:name/nics/:nic": "operator",
  "GET /api/v1/groups": "viewer",
  "GET /api/v1/groups/:name": "viewer",
  "POST /api/v1/groups": "operator",
  "DELETE /api/v1/groups/:name": "operator",
  "GET /api/v1/networks": "viewer",
  "GET /api/v1/networks/:name": "viewer",
  "POST /api/v1/networks": "operator",
  "DELETE /api/v1/networks/:name": "operator",
  "GET /api/v1/security-groups": "viewer",
  "GET /api/v1/security-groups/:name": "viewer",
  "POST /api/v1/security-groups": "operator",
  "DELETE /api/v1/security-groups/:name": "operator",
  "POST /api/v1/security-groups/:name/rules": "operator",
  "DELETE /api/v1/security-groups/:name/rules/:id": "operator",
  "GET /api/v1/routers": "viewer",
  "GET /api/v1/routers/:name": "viewer",
  "POST /api/v1/routers": "operator",
  "DELETE /api/v1/routers/:name": "operator",
  "POST /api/v1/routers/:name/networks": "operator",
  "DELETE /api/v1/routers/:name/networks/:network": "operator",
  "PUT /api/v1/routers/:name/uplink": "operator",
  "GET /api/v1/floating-ips": "viewer",
  "GET /api/v1/floating-ips/:ip": "viewer",
  "POST /api/v1/floating-ips": "operator",
  "DELETE /api/v1/floating-ips/:ip": "operator",
  "POST /api/v1/floating-ips/:ip/attach": "operator",
  "POST /api/v1/floating-ips/:ip/detach": "operator",
  "GET /api/v1/pools": "viewer",
  "GET /api/v1/pools/:name": "viewer",
  "POST /api/v1/pools": "operator",
  "DELETE /api/v1/pools/:name": "operator",
  "GET /api/v1/volumes": "viewer",
  "GET /api/v1/volumes/:name": "viewer",
  "POST /api/v1/volumes": "operator",
  "POST /api/v1/volumes/:name/resize": "operator",
  "DELETE /api/v1/volumes/:name": "operator",
  "GET /api/v1/vms/:name/disks": "viewer",
  "POST /api/v1/vms/:name/disks": "operator",
  "DELETE /api/v1/vms/:name/disks/:disk": "operator",
  "GET /api/v1/alerts": "viewer",
  "GET /api/v1/alerts/metrics": "viewer",
  "GET /api/v1/alerts/rules": "viewer",
  "GET /api/v1/alerts/rules/:name": "viewer",
  "POST /api/v1/alerts/rules": "operator",
  "PATCH /api/v1/alerts/rules/:name": "operator",
  "DELETE /api/v1/alerts/rules/:name": "operator",
  "GET /api/v1/backup-targets": "viewer",
  "GET /api/v1/backup-targets/:name": "viewer",
  "POST /api/v1/backup-targets": "admin",
  "DELETE /api/v1/backup-targets/:name": "admin",
  "GET /api/v1/backups": "viewer",
  "GET /api/v1/backups/:id": "viewer",
  "POST /api/v1/backups": "operator",
  "DELETE /api/v1/backups/:id": "operator",
  "POST /api/v1/backups/:id/verify": "operator",
  "POST /api/v1/backups/:id/restore": "operator",
  "GET /api/v1/backup-schedules": "viewer",
  "GET /api/v1/backup-schedules/:vm": "viewer",
  "PUT /api/v1/backup-schedules/:vm": "operator",
  "DELETE /api/v1/backup-schedules/:vm": "operator",
  "GET /api/v1/operations": "viewer",
  "GET /api/v1/operations/:id": "viewer",
  "GET /api/v1/operations/:id/wait": "viewer",
  "POST /api/v1/operations/:id/abort": "operator",
  "PUT /api/v1/blobs/:sha256": "operator",
  "GET /api/v1/tokens": "admin",
  "POST /api/v1/tokens": "admin",
  "DELETE /api/v1/tokens/:name": "admin",
  "POST /api/v1/tokens/:name/rotate": "admin",
  // It names every token, client address and target: not for viewers.
  "GET /api/v1/audit": "admin",
  // Audit events in it are for admins only (api/routes/events.ts).
  "GET /api/v1/events": "viewer",
  "GET /api/v1/version": "viewer",
};

/** Fills a route's parameters with names that exist nowhere. */
function concrete(path: string): string {
  return path.replace(/:key/, "no.such.key").replace(/:sha256/, "0".repeat(64))
    .replace(/:[a-z0-9]+/gi, "ghost");
}

const BELOW: Record<Role, Role | null> = { viewer: null, operator: "viewer", admin: "operator" };

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "API: every route requires the role the table names",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  // The host side is not under test: any use of it fails the call (500), never a role check.
  const { c, app, tokens } = await startTestApp();
  const call = async (method: string, path: string, token?: string) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const body = method === "GET" ? undefined : "{}";
    const res = await app.request(path, { method, headers, body });
    await res.body?.cancel();
    return res.status;
  };
  try {
    await t.step("the table lists every route of the app", () => {
      const routes = [
        ...new Set(
          app.routes.filter((r) => r.method !== "ALL").map((r) => `${r.method} ${r.path}`),
        ),
      ];
      assertEquals(routes.filter((r) => !(r in ROUTES)), [], "routes missing from the table");
      assertEquals(Object.keys(ROUTES).filter((r) => !routes.includes(r)), [], "stale entries");
    });

    for (const [route, role] of Object.entries(ROUTES)) {
      if (role === "none" || role === "peer") continue;
      await t.step(`${route}: ${role}`, async () => {
        const [method, pattern] = route.split(" ");
        const path = concrete(pattern);
        assertEquals(await call(method, path), 401, "no token");
        const below = BELOW[role];
        if (below) assertEquals(await call(method, path, tokens[below]), 403, below);
        const status = await call(method, path, tokens[role]);
        assert(status !== 401 && status !== 403, `${role} got ${status}`);
      });
    }
  } finally {
    await c.stop();
  }
});
