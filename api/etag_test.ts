/**
 * ETag / If-Match on the API's resources (api/etag.ts): GET answers an ETag; a write with an
 * If-Match naming another version is 412 precondition_failed and changes nothing; the current
 * ETag lets it through; the ETag moves when the record does.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";
import { startTestApp } from "./testing.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

/** A resource, how to make it, and a write to it that succeeds with `ok`. */
interface Case {
  path: string;
  create?: { path: string; body: unknown; method?: string }[];
  write: { method: string; path: string; body?: unknown; ok: number };
}

const CASES: Case[] = [
  // A stop is a VM lifecycle operation: 202 (core/fsm/vm_operations.ts).
  { path: "/api/v1/vms/web", write: { method: "POST", path: "/api/v1/vms/web/stop", ok: 202 } },
  {
    path: "/api/v1/nodes/n1",
    write: { method: "POST", path: "/api/v1/nodes/n1/cordon", ok: 200 },
  },
  {
    path: "/api/v1/groups/g1",
    create: [{ path: "/api/v1/groups", body: { name: "g1", policy: "affinity" } }],
    write: { method: "DELETE", path: "/api/v1/groups/g1", ok: 200 },
  },
  {
    path: "/api/v1/networks/blue",
    create: [{
      path: "/api/v1/networks",
      body: { name: "blue", type: "overlay", subnet: "10.10.0.0/24" },
    }],
    write: { method: "DELETE", path: "/api/v1/networks/blue", ok: 200 },
  },
  {
    path: "/api/v1/security-groups/sg1",
    create: [{ path: "/api/v1/security-groups", body: { name: "sg1" } }],
    write: {
      method: "POST",
      path: "/api/v1/security-groups/sg1/rules",
      body: { direction: "ingress", protocol: "tcp", port: 22 },
      ok: 201,
    },
  },
  {
    path: "/api/v1/backup-targets/t1",
    create: [{ path: "/api/v1/backup-targets", body: { name: "t1", path: "/srv/backups" } }],
    write: { method: "DELETE", path: "/api/v1/backup-targets/t1", ok: 200 },
  },
  {
    path: "/api/v1/alerts/rules/hot",
    create: [{
      path: "/api/v1/alerts/rules",
      body: { name: "hot", metric: "vm.cpu", above: 90, for: "5m" },
    }],
    write: { method: "PATCH", path: "/api/v1/alerts/rules/hot", body: { above: 95 }, ok: 200 },
  },
  {
    path: "/api/v1/backup-schedules/web",
    create: [
      { path: "/api/v1/backup-targets", body: { name: "t2", path: "/srv/b2" } },
      {
        method: "PUT",
        path: "/api/v1/backup-schedules/web",
        body: { cron: "0 3 * * *", target: "t2", keepLast: 1 },
      },
    ],
    write: {
      method: "PUT",
      path: "/api/v1/backup-schedules/web",
      body: { cron: "0 3 * * *", target: "t2", keepLast: 3 },
      ok: 200,
    },
  },
  {
    path: "/api/v1/routers/r1",
    create: [{ path: "/api/v1/routers", body: { name: "r1" } }],
    write: { method: "DELETE", path: "/api/v1/routers/r1", ok: 200 },
  },
  {
    path: "/api/v1/images/img2",
    write: { method: "DELETE", path: "/api/v1/images/img2", ok: 200 },
  },
];

testWithTimeout({ name: "API: ETag and If-Match on every resource", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.admin;
  try {
    await c.vm({ name: "web", node: "n1" }, "running");
    await c.node.propose({
      op: "image.create",
      image: {
        name: "img2",
        kind: "kernel",
        kernel: { sha256: "0".repeat(64), size: 1 },
        sources: ["n1"],
      },
      by: "test",
      at: Date.now(),
    });
    for (const k of CASES) {
      await t.step(k.path, async () => {
        for (const make of k.create ?? []) {
          const made = await call(make.method ?? "POST", make.path, { token, body: make.body });
          assert(made.status < 300, JSON.stringify(made.body));
        }
        const got = await call("GET", k.path, { token });
        assertEquals(got.status, 200, JSON.stringify(got.body));
        const etag = got.headers.get("etag");
        assert(etag && /^"[0-9a-f]{32}"$/.test(etag), `ETag ${etag}`);
        assertEquals((await call("GET", k.path, { token })).headers.get("etag"), etag, "stable");

        const { method, path, body, ok } = k.write;
        for (const stale of ['"0123"', "W/" + etag, '"x", "y"']) {
          const r = await call(method, path, { token, body, headers: { "if-match": stale } });
          assertEquals([r.status, r.body.error?.code], [412, "precondition_failed"], stale);
        }
        assertEquals((await call("GET", k.path, { token })).headers.get("etag"), etag, "unchanged");

        const r = await call(method, path, {
          token,
          body,
          headers: { "if-match": `"a", ${etag}` },
        });
        assertEquals(r.status, ok, JSON.stringify(r.body));
        const after = await call("GET", k.path, { token });
        if (after.status === 200) {
          assert(after.headers.get("etag") !== etag, "the write moved the ETag");
          const again = await call(method, path, { token, body, headers: { "if-match": etag } });
          assertEquals(again.status, 412, "the old ETag no longer matches");
        } else {
          assertEquals(after.status, 404);
          const gone = await call(method, path, { token, body, headers: { "if-match": "*" } });
          assertEquals(gone.status, 412, "If-Match: * needs the resource");
        }
      });
    }
    await t.step("without If-Match, writes go through as before", async () => {
      const r = await call("POST", "/api/v1/vms/web/start", { token });
      assertEquals(r.status, 202, JSON.stringify(r.body));
    });
  } finally {
    await c.stop();
  }
});
