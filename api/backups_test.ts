/**
 * `/api/v1/backup-targets`, `/api/v1/backups` and `/api/v1/backup-schedules`
 * without a host: bad input refused with its field named, nothing changed;
 * targets and schedules recorded. (Backups themselves need QEMU:
 * tests/backup_test.ts.)
 */
import { assert, assertEquals } from "../core/testing/assert.ts";
import { type CallResult, fieldsOf, startTestApp } from "./testing.ts";
import { MINUTE, testWithTimeout } from "../tests/support/timeout.ts";

const opts = { timeoutMs: 2 * MINUTE, sanitizeOps: false, sanitizeResources: false };

testWithTimeout({ name: "API: backup targets, backups and schedules", ...opts }, async (t) => {
  const { c, call, tokens } = await startTestApp();
  const token = tokens.admin;
  const refused = async (r: Promise<CallResult>, status: number, field?: string) => {
    const res = await r;
    assertEquals(res.status, status, JSON.stringify(res.body));
    if (field) assert(fieldsOf(res).includes(field), `${field} named: ${JSON.stringify(res.body)}`);
    return res.body;
  };
  try {
    await t.step("targets: bad names and paths refused, one created", async () => {
      const post = (body: unknown) => call("POST", "/api/v1/backup-targets", { token, body });
      await refused(post({ name: "t1", path: "relative" }), 400, "path");
      await refused(post({ name: "T 1", path: "/srv" }), 400, "name");
      await refused(post({ name: "t1", path: "/srv/../etc" }), 400, "path");
      await refused(
        call("POST", "/api/v1/backup-targets", {
          token: tokens.operator,
          body: { name: "t1", path: "/srv" },
        }),
        403,
      );
      assertEquals((await call("GET", "/api/v1/backup-targets", { token })).body.targets, []);
      const r = await post({ name: "t1", path: "/srv/backups/" });
      assertEquals(r.status, 201, JSON.stringify(r.body));
      assertEquals(r.body.path, "/srv/backups");
      await refused(post({ name: "t1", path: "/srv/other" }), 409);
    });

    await t.step("backups: unknown VM, target or backup refused; nothing recorded", async () => {
      await refused(
        call("POST", "/api/v1/backups", { token, body: { vm: "nope", target: "t1" } }),
        404,
      );
      await refused(
        call("POST", "/api/v1/backups", { token, body: { vm: "web1", incremental: "yes" } }),
        400,
        "incremental",
      );
      await refused(call("POST", "/api/v1/backups/bk-000000000001/verify", { token }), 404);
      await refused(
        call("POST", "/api/v1/backups/bk-000000000001/restore", {
          token,
          body: { as: "r1", inPlace: true },
        }),
        400,
        "as",
      );
      await refused(
        call("POST", "/api/v1/backups/bk-000000000001/restore", { token, body: { as: "r1" } }),
        404,
      );
      assertEquals((await call("GET", "/api/v1/backups", { token })).body.backups, []);
      assertEquals((await call("GET", "/api/v1/operations", { token })).body.operations, []);
    });

    await t.step("schedules: a bad cron or no retention refused; unknown VMs too", async () => {
      const put = (body: unknown) => call("PUT", "/api/v1/backup-schedules/web1", { token, body });
      await refused(put({ cron: "61 * * * *", keepLast: 1 }), 400, "cron");
      await refused(put({ cron: "0 2 * *", keepLast: 1 }), 400, "cron");
      await refused(put({ cron: "0 2 * * *" }), 400, "keepLast");
      await refused(put({ cron: "0 2 * * *", keepLast: -1 }), 400, "keepLast");
      await refused(
        call("PUT", "/api/v1/backup-schedules/nope", {
          token,
          body: { cron: "0 2 * * *", keepLast: 1 },
        }),
        404,
      );
      assertEquals((await call("GET", "/api/v1/backup-schedules", { token })).body.schedules, []);
    });
  } finally {
    await c.stop();
  }
});
