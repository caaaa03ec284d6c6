/** /api/v1/tokens in-process: issue, use, list, revoke, rotate, expiry and bad input. */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { TestCluster } from "../core/testing/test_cluster.ts";
import { LeaseTable } from "../core/cluster/mod.ts";
import { BlobStore } from "../host/storage/mod.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { sha256Hex } from "../core/secrets/mod.ts";
import { createApp } from "./app.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

interface Body {
  token?: string;
  name?: string;
  role?: string;
  expiresAt?: string | null;
  tokens?: Record<string, unknown>[];
  error?: { code: string; message: string; details?: { fields?: { field: string }[] } };
}

testWithTimeout({
  timeoutMs: 2 * MINUTE,
  name: "API: tokens are issued, listed without secrets, expire, are revoked and rotated",
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const c = await TestCluster.start();
  const app = createApp(c.node, {
    blobs: await new BlobStore(`${c.dataDir}/blobs`).init(),
    leases: new LeaseTable(() => c.node.isLeader() ? c.node.raft.status().term : null),
    host: {} as VmHost,
    migrator: {} as Migrator,
  });
  const call = async (method: string, path: string, token: string, body?: unknown) => {
    const res = await app.request(path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() as Body };
  };
  const fields = (b: Body) => (b.error?.details?.fields ?? []).map((f) => f.field).sort();
  const admin = c.adminToken;
  try {
    let viewer = "";
    await t.step("create: the secret is shown once, prefixed nva_, and works", async () => {
      const r = await call("POST", "/api/v1/tokens", admin, { name: "ci", role: "viewer" });
      assertEquals([r.status, r.body.name, r.body.role, r.body.expiresAt], [
        201,
        "ci",
        "viewer",
        null,
      ]);
      viewer = r.body.token!;
      assert(/^nva_[A-Za-z0-9_-]{40,}$/.test(viewer), viewer);
      assertEquals((await call("GET", "/api/v1/vms", viewer)).status, 200);
      assertEquals((await call("POST", "/api/v1/groups", viewer, {})).status, 403);
      assertEquals((await call("GET", "/api/v1/tokens", viewer)).status, 403);
    });

    await t.step("list shows names, roles, times; never a secret or hash", async () => {
      const r = await call("GET", "/api/v1/tokens", admin);
      assertEquals(r.body.tokens!.map((x) => [x.name, x.role]), [["admin", "admin"], [
        "ci",
        "viewer",
      ]]);
      const text = JSON.stringify(r.body);
      for (const secret of [viewer, admin]) {
        assert(!text.includes(secret) && !text.includes(sha256Hex(secret)), "leaks a secret");
      }
    });

    await t.step("bad names, roles and ttls: 400 naming the field", async () => {
      const bad: [unknown, string[]][] = [
        [{ name: "Bad Name", role: "viewer" }, ["name"]],
        [{ name: "x".repeat(64), role: "viewer" }, ["name"]],
        [{ name: "ok", role: "root" }, ["role"]],
        [{ name: "ok", role: "viewer", ttl: "soon" }, ["ttl"]],
        [{ name: "ok", role: "viewer", ttl: "0s" }, ["ttl"]],
        [{ name: "ok", role: "viewer", ttl: "99999d" }, ["ttl"]],
        [{ name: "ok", role: "viewer", secret: "mine" }, ["body"]],
      ];
      for (const [body, want] of bad) {
        const r = await call("POST", "/api/v1/tokens", admin, body);
        assertEquals([r.status, fields(r.body)], [400, want], JSON.stringify(body));
      }
      const dup = await call("POST", "/api/v1/tokens", admin, { name: "ci", role: "admin" });
      assertEquals(dup.status, 409);
    });

    await t.step("an expired token gets 401 'token expired'", async () => {
      const secret = "nva_expired_secret_for_test_only_000000";
      const at = Date.now() - 10_000;
      await c.node.propose({
        op: "apiToken.create",
        hash: sha256Hex(secret),
        name: "old",
        role: "admin",
        expiresAt: at + 1_000,
        by: "test",
        at,
      });
      const r = await call("GET", "/api/v1/vms", secret);
      assertEquals(r.status, 401);
      assert(r.body.error!.message.startsWith("token expired"), r.body.error!.message);
      const listed = (await call("GET", "/api/v1/tokens", admin)).body.tokens!;
      assertEquals(listed.find((x) => x.name === "old")?.expired, true);
    });

    await t.step("revoke: 401 from the next request on; unknown names 404", async () => {
      assertEquals((await call("DELETE", "/api/v1/tokens/ci", admin)).status, 200);
      const r = await call("GET", "/api/v1/vms", viewer);
      assertEquals([r.status, r.body.error!.message], [401, "invalid API token"]);
      assertEquals((await call("DELETE", "/api/v1/tokens/ci", admin)).status, 404);
      assertEquals((await call("DELETE", "/api/v1/tokens/admin", admin)).status, 409);
    });

    await t.step("rotate the bootstrap admin token: old 401, new 200", async () => {
      const r = await call("POST", "/api/v1/tokens/admin/rotate", admin, {});
      assertEquals([r.status, r.body.name, r.body.role], [200, "admin", "admin"]);
      const fresh = r.body.token!;
      assert(fresh !== admin && fresh.startsWith("nva_"));
      assertEquals((await call("GET", "/api/v1/tokens", admin)).status, 401);
      assertEquals((await call("GET", "/api/v1/tokens", fresh)).status, 200);
    });
  } finally {
    await c.stop();
  }
});
