/**
 * The OpenAPI document against the app it describes: every public route is in it and
 * declared, it is a valid OpenAPI 3.1 document, and real answers fit its response schemas.
 */
import { Validator } from "@seriousme/openapi-schema-validator";
import { assert, assertEquals } from "../../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";
import { type CallOptions, startTestApp, type TestApp } from "../testing.ts";
import { ResponseChecker } from "./response_check.ts";
import { PUBLIC_PREFIX, publicRoutes } from "./document.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

// deno-lint-ignore no-explicit-any
type Doc = { paths: Record<string, Record<string, any>>; components: Record<string, unknown> };

async function documentOf(t: TestApp): Promise<Doc> {
  const r = await t.call("GET", "/api/v1/openapi.json", { token: t.tokens.admin });
  assertEquals(r.status, 200);
  const anonymous = await t.call("GET", "/api/v1/openapi.json");
  assertEquals(anonymous.status, 200, "the document needs no token");
  return r.body;
}

/** `/api/v1/vms/:name` → `/api/v1/vms/{name}`. */
const oaPath = (p: string) => p.replace(/:([A-Za-z0-9_]+)/g, "{$1}");

testWithTimeout({ name: "OpenAPI: every public route is in the document", ...opts }, async () => {
  const t = await startTestApp();
  try {
    const doc = await documentOf(t);
    // Straight from Hono's own table, not through the generator's route walk.
    const mounted = new Set(
      t.app.routes.filter((r) => r.method !== "ALL" && r.path.startsWith(`${PUBLIC_PREFIX}/`))
        .map((r) => `${r.method.toLowerCase()} ${oaPath(r.path)}`),
    );
    const documented = new Set(
      Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`)),
    );
    assertEquals([...mounted].filter((k) => !documented.has(k)), [], "mounted, not documented");
    assertEquals([...documented].filter((k) => !mounted.has(k)), [], "documented, not mounted");
    const undeclared = publicRoutes(t.app).filter((r) => !r.doc).map((r) =>
      `${r.method} ${r.path}`
    );
    assertEquals(undeclared, [], "routes without doc({...}) in their chain");
    const twice = publicRoutes(t.app).filter((r) => r.docCount > 1).map((r) =>
      `${r.method} ${r.path}`
    );
    assertEquals(twice, [], "routes with more than one doc({...})");
    const ids = Object.values(doc.paths).flatMap((ops) =>
      Object.values(ops).map((o) => o.operationId)
    );
    assertEquals(ids.length, new Set(ids).size, "operationIds are unique");
    assert(mounted.size > 100, `only ${mounted.size} routes: is the app complete?`);
    // Every list (an answer with `continue`, api/pagination.ts) takes ?limit= and ?continue=.
    const schemas = (doc.components as { schemas: Record<string, Record<string, unknown>> })
      .schemas;
    const lists = Object.entries(doc.paths).flatMap(([p, ops]) => {
      // deno-lint-ignore no-explicit-any
      let s: any = ops.get?.responses?.["200"]?.content?.["application/json"]?.schema;
      if (s?.$ref) s = schemas[s.$ref.split("/").pop()];
      return s?.properties?.continue ? [{ path: p, op: ops.get }] : [];
    });
    assert(lists.length >= 20, `only ${lists.length} lists document continue`);
    for (const { path, op } of lists) {
      const query = (op.parameters ?? []).filter((q: { in: string }) => q.in === "query")
        .map((q: { name: string }) => q.name);
      assert(query.includes("limit") && query.includes("continue"), `${path}: ${query}`);
    }
  } finally {
    await t.c.stop();
  }
});

testWithTimeout({ name: "OpenAPI: the document is valid OpenAPI 3.1", ...opts }, async () => {
  const t = await startTestApp();
  try {
    const doc = await documentOf(t);
    const validator = new Validator();
    const result = await validator.validate(doc);
    assertEquals(validator.version, "3.1");
    assert(result.valid, JSON.stringify(result.errors, null, 1)?.slice(0, 4000));
  } finally {
    await t.c.stop();
  }
});

testWithTimeout(
  { name: "OpenAPI: real answers fit the documented response schemas", ...opts },
  async () => {
    const t = await startTestApp();
    try {
      const doc = await documentOf(t);
      const checker = new ResponseChecker(doc);
      const call = async (method: string, path: string, o: CallOptions = {}) => {
        const r = await t.call(method, path, { token: t.tokens.admin, ...o });
        assert(r.status < 500, `${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
        checker.check(method, path, r.status, r.body);
        return r;
      };
      await t.c.addHost("n2");
      await t.c.vm({ name: "web1", node: "n1", labels: { tier: "web" } }, "running");
      await t.c.vm({ name: "web2", node: "n2" }, "stopped");

      await call("GET", "/api/v1/cluster");
      await call("GET", "/api/v1/nodes");
      await call("GET", "/api/v1/nodes/n1");
      await call("GET", "/api/v1/images");
      await call("GET", "/api/v1/images/img");
      await call("GET", "/api/v1/vms");
      await call("GET", "/api/v1/vms?limit=1");
      await call("GET", "/api/v1/vms/web1");
      await call("GET", "/api/v1/vms/web1/snapshots");
      await call("GET", "/api/v1/vms/web1/nics");
      await call("GET", "/api/v1/vms/web1/disks");
      const created = await call("POST", "/api/v1/vms", {
        body: { name: "db1", image: "img", cpus: 1, memoryMiB: 64, start: false },
      });
      assertEquals(created.status, 201, JSON.stringify(created.body));
      await call("POST", "/api/v1/vms", {
        body: { name: "db2", image: "img", memoryMiB: 64, dryRun: true },
      });
      await call("POST", "/api/v1/vms/web1/resize", { body: { cpus: 2 } });
      await call("POST", "/api/v1/vms/web2/start");
      const migrating = await call("POST", "/api/v1/vms/web1/migrate", { body: { to: "n2" } });
      assertEquals(migrating.status, 202, JSON.stringify(migrating.body));
      await call("GET", "/api/v1/operations");
      await call("GET", `/api/v1/operations/${migrating.body.id}`);
      await call("POST", "/api/v1/vms/web2/stop");
      await call("POST", "/api/v1/groups", { body: { name: "g1", policy: "affinity" } });
      await call("GET", "/api/v1/groups");
      await call("GET", "/api/v1/groups/g1");
      await call("DELETE", "/api/v1/groups/g1");
      await call("POST", "/api/v1/nodes/n2/cordon");
      await call("POST", "/api/v1/nodes/n2/uncordon");
      await call("GET", "/api/v1/config");
      await call("POST", "/api/v1/networks", {
        body: { name: "blue", type: "overlay", subnet: "10.10.0.0/24" },
      });
      await call("POST", "/api/v1/security-groups", { body: { name: "sg1" } });
      await call("POST", "/api/v1/routers", { body: { name: "r1" } });
      for (
        const list of [
          "networks",
          "security-groups",
          "routers",
          "floating-ips",
          "pools",
          "volumes",
          "backup-targets",
          "backups",
          "backup-schedules",
          "alerts",
          "alerts/rules",
          "cluster/tokens",
          "vms/web1/nics",
        ]
      ) {
        const r = await call("GET", `/api/v1/${list}`);
        assertEquals(r.status, 200, `${list}: ${JSON.stringify(r.body)}`);
      }
      await call("GET", "/api/v1/tokens");
      await call("GET", "/api/v1/audit");
      await call("DELETE", "/api/v1/vms/db1");

      // Errors, each the documented error shape.
      await call("GET", "/api/v1/vms/nope");
      await call("POST", "/api/v1/vms", { body: { name: "BAD" } });
      await call("GET", "/api/v1/vms", { token: "wrong" });
      await call("POST", "/api/v1/vms/web1/start", { token: t.tokens.viewer });

      for (const want of ["get /api/v1/vms 200", "get /api/v1/vms/{name} 404"]) {
        assert(checker.checked.has(want), `not checked: ${want}`);
      }
    } finally {
      await t.c.stop();
    }
  },
);
