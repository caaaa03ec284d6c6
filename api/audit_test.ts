/**
 * The audit middleware and GET /api/v1/audit over the real app and a real
 * one-voter leader, in-process: what a mutating request leaves in the
 * replicated log (successes and refusals alike), who may read it, and that a
 * client cannot pass off its own address or request id as a forwarding peer's.
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { auditBufferOf, delay, LeaseTable } from "../core/cluster/mod.ts";
import type { AuditEntry } from "../core/fsm/mod.ts";
import { BlobStore } from "../host/storage/mod.ts";
import type { Migrator, VmHost } from "../host/mod.ts";
import { createApp } from "./app.ts";
import { resourceOf } from "./audit.ts";
import { parseSince } from "./routes/audit.ts";
import { notUsedHere, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

async function harness() {
  const { c, call, tokens } = await startTestApp();
  /** The log once everything buffered is committed. */
  const entries = async (): Promise<AuditEntry[]> => {
    await auditBufferOf(c.node).flush();
    for (let i = 0; i < 100 && auditBufferOf(c.node).pending; i++) await delay(20);
    return c.node.fsm.auditEntries({ limit: 1000 });
  };
  return { c, call, tokens, entries };
}

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "audit API: every mutating request is recorded, refusals too",
    ...opts,
  },
  async () => {
    const { c, call, tokens, entries } = await harness();
    try {
      const vm = { name: "web1", image: "img", cpus: 1, memoryMiB: 64, start: false };
      const created = await call("POST", "/api/v1/vms", { token: tokens.admin, body: vm });
      assertEquals(created.status, 201);
      const rid = created.headers.get("x-request-id");
      assert(rid && rid.length >= 16, "the answer carries its request id");
      const refused = await call("POST", "/api/v1/vms", {
        token: tokens.viewer,
        body: { ...vm, name: "web2" },
      });
      assertEquals(refused.status, 403);
      const anon = await call("POST", "/api/v1/vms/web1/stop");
      assertEquals(anon.status, 401);
      const bad = await call("POST", "/api/v1/vms", { token: tokens.admin, body: { name: "X" } });
      assertEquals(bad.status, 400);
      assertEquals((await call("GET", "/api/v1/vms", { token: tokens.admin })).status, 200);

      const log = await entries();
      assertEquals(log.length, 4, "four mutating requests, the GET is not recorded");
      const byCode = new Map(log.map((e) => [e.code, e]));
      const ok = byCode.get(201)!;
      assertEquals(
        [ok.principal, ok.role, ok.method, ok.route, ok.resource, ok.requestId, ok.node],
        ["admin", "admin", "POST", "/api/v1/vms", "vm/web1", rid, "n1"],
      );
      const denied = byCode.get(403)!;
      assertEquals([denied.principal, denied.role, denied.resource], [
        "viewer-token",
        "viewer",
        "vm/web2",
      ]);
      const nobody = byCode.get(401)!;
      assertEquals([nobody.principal, nobody.route, nobody.resource], [
        "anonymous",
        "/api/v1/vms/:name/stop",
        "vm/web1",
      ]);
      assertEquals(byCode.get(400)!.resource, "vm/X");
      for (const e of log) assert(e.ms >= 0 && e.at > 0 && e.source !== "", JSON.stringify(e));
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "audit API: admin-only reads, filters, and no spoofed source",
    ...opts,
  },
  async () => {
    const { c, call, tokens, entries } = await harness();
    try {
      // A client (not a member) claims to forward for someone else: neither claim is taken.
      const spoof = await call("POST", "/api/v1/groups", {
        token: tokens.admin,
        body: { name: "g1", policy: "affinity", strict: false },
        headers: {
          "x-novactl-forwarded-for": "6.6.6.6",
          "x-novactl-forwarded-by": "n1",
          "x-request-id": "chosen-by-client",
        },
      });
      assertEquals(spoof.status, 201);
      assert(spoof.headers.get("x-request-id") !== "chosen-by-client");
      assertEquals(spoof.headers.get("x-novactl-audited"), null, "no mark leaks to clients");
      const [e] = await entries();
      assert(e.source !== "6.6.6.6", `source ${e.source} taken from a client's header`);
      assert(e.requestId !== "chosen-by-client");
      assertEquals(e.resource, "group/g1");

      assertEquals((await call("GET", "/api/v1/audit", { token: tokens.viewer })).status, 403);
      const all = await call("GET", "/api/v1/audit", { token: tokens.admin });
      assertEquals(all.status, 200);
      assertEquals(all.body.entries.length, 1);
      const none = await call("GET", "/api/v1/audit?principal=nobody", { token: tokens.admin });
      assertEquals(none.body.entries.length, 0);
      const byRes = await call("GET", "/api/v1/audit?resource=group/g1&since=1h", {
        token: tokens.admin,
      });
      assertEquals(byRes.body.entries.length, 1);
      const future = new Date(Date.now() + 3_600_000).toISOString();
      const later = await call("GET", `/api/v1/audit?since=${future}`, { token: tokens.admin });
      assertEquals(later.body.entries.length, 0);
      assertEquals(
        (await call("GET", "/api/v1/audit?since=yesterday", { token: tokens.admin })).status,
        400,
      );
    } finally {
      await c.stop();
    }
  },
);

testWithTimeout(
  {
    timeoutMs: 2 * MINUTE,
    name: "audit API: a refused client that never finishes its body is answered and recorded",
    ...opts,
  },
  async () => {
    const { c, entries } = await harness();
    const app = createApp(c.node, {
      blobs: await new BlobStore(`${c.dataDir}/blobs2`).init(),
      leases: new LeaseTable(() => null),
      host: notUsedHere<VmHost>("host"),
      migrator: notUsedHere<Migrator>("migrator"),
    });
    let feed: ReadableStreamDefaultController<Uint8Array> | undefined;
    const body = new ReadableStream<Uint8Array>({ start: (ctl) => void (feed = ctl) });
    feed!.enqueue(new TextEncoder().encode('{"name": "slow'));
    try {
      const res = await app.request("/api/v1/vms", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      assertEquals(res.status, 401, "answered while the body is still open");
      await res.body?.cancel();
      await c.until("the record", () => c.node.fsm.auditEntries().length > 0, 30_000);
      const [e] = await entries();
      assertEquals([e.principal, e.code, e.resource], ["anonymous", 401, "vm"]);
    } finally {
      feed!.close();
      await c.stop();
    }
  },
);

testWithTimeout({ timeoutMs: MINUTE, name: "audit: resource and since parsing" }, () => {
  assertEquals(resourceOf("/api/v1/vms/web1/snapshots/s1", null), "vm/web1");
  assertEquals(resourceOf("/api/v1/vms", { name: "db" }), "vm/db");
  assertEquals(resourceOf("/api/v1/cluster/members/n3", null), "node/n3");
  assertEquals(resourceOf("/api/v1/config/ha.leaseMs", null), "config/ha.leaseMs");
  assertEquals(resourceOf("/api/v1/config", { "x": 1 }), "config");
  assertEquals(resourceOf("/api/v1/nodes/n2/drain", null), "node/n2");
  assertEquals(resourceOf("/api/v1/backups", { vm: "web1" }), "vm/web1");
  assertEquals(resourceOf("/api/v1/backups/bk-1/restore", { as: "x" }), "backup/bk-1");
  assertEquals(resourceOf("/api/v1/backup-targets", { name: "nas" }), "backupTarget/nas");
  assertEquals(resourceOf("/api/v1/alerts/rules", { name: "hot" }), "alertRule/hot");
  assertEquals(resourceOf("/api/v1/alerts/rules/hot", { enabled: false }), "alertRule/hot");
  assertEquals(parseSince("1h", 10_000_000), 10_000_000 - 3_600_000);
  assertEquals(parseSince("2026-01-01T00:00:00Z", 0), Date.UTC(2026, 0, 1));
});
