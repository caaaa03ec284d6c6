/**
 * The backup index in the state machine: targets, recorded backups and their
 * chains, deletes that would break a chain or empty a used target refused,
 * schedules; and the index survives a snapshot.
 */
import { assert, assertEquals } from "../testing/assert.ts";
import type { BackupRecord } from "./backups.ts";
import { ConflictError, ValidationError } from "../errors/mod.ts";
import { apply, fresh, refused } from "../testing/fsm.ts";

function backup(
  id: string,
  parent: string | null,
  chain = parent ? "bk-000000000001" : id,
): Omit<BackupRecord, "createdAt"> {
  return {
    id,
    vm: "web1",
    target: "t1",
    kind: parent ? "incremental" : "full",
    parent,
    chain,
    dir: "web1",
    manifest: `${id}.manifest.json`,
    manifestSha256: "0".repeat(64),
    disks: [{
      id: "root",
      file: `${id}.root.qcow2`,
      virtualBytes: 1,
      fileBytes: 1,
      copiedBytes: 1,
    }],
    fullReason: null,
    node: "h1",
  };
}

const by = "admin";

Deno.test("backup targets: names and paths checked, unique, not deleted while used", async () => {
  const fsm = await fresh();
  const bad = refused(fsm, {
    op: "backup.target.create",
    target: { name: "t1", path: "relative/dir" },
    by,
    at: 2,
  });
  assert(bad instanceof ValidationError);
  assertEquals((bad as ValidationError).issues[0].field, "path");
  assert(
    refused(fsm, {
      op: "backup.target.create",
      target: { name: "t1", path: "/srv/../etc" },
      by,
      at: 2,
    }) instanceof ValidationError,
  );
  assert(
    refused(fsm, {
      op: "backup.target.create",
      target: { name: "T_1", path: "/srv" },
      by,
      at: 2,
    }) instanceof
      ValidationError,
  );
  apply(fsm, { op: "backup.target.create", target: { name: "t1", path: "/srv/b" }, by, at: 2 });
  assert(
    refused(fsm, {
      op: "backup.target.create",
      target: { name: "t1", path: "/x" },
      by,
      at: 3,
    }) instanceof
      ConflictError,
  );
  apply(fsm, { op: "backup.record", backup: backup("bk-000000000001", null), at: 4 });
  const busy = refused(fsm, { op: "backup.target.delete", name: "t1", by, at: 5 });
  assert(busy instanceof ConflictError && /holds 1 backup/.test(busy.message), busy.message);
  apply(fsm, { op: "backup.delete", id: "bk-000000000001", by, at: 6 });
  apply(fsm, { op: "backup.target.delete", name: "t1", by, at: 7 });
  assertEquals(fsm.backups.targets(), []);
});

Deno.test("backups: chains recorded, a parent is never deleted before its children", async () => {
  const fsm = await fresh();
  apply(fsm, { op: "backup.target.create", target: { name: "t1", path: "/srv/b" }, by, at: 2 });
  const full = "bk-000000000001";
  const i1 = "bk-000000000002";
  const i2 = "bk-000000000003";
  // An incremental backup whose parent is not there is refused.
  assert(
    refused(fsm, { op: "backup.record", backup: backup(i1, full), at: 3 }) instanceof ConflictError,
  );
  apply(fsm, { op: "backup.record", backup: backup(full, null), at: 3 });
  apply(fsm, { op: "backup.record", backup: backup(i1, full), at: 4 });
  apply(fsm, { op: "backup.record", backup: backup(i2, i1), at: 5 });
  assertEquals(fsm.backups.chainOf(i2).map((b) => b.id), [full, i1, i2]);
  assertEquals(fsm.backups.children(full), [i1]);
  assertEquals(fsm.backups.list("web1").map((b) => b.createdAt), [3, 4, 5]);
  const err = refused(fsm, { op: "backup.delete", id: i1, by, at: 6 });
  assert(err instanceof ConflictError && /is the parent of bk-000000000003/.test(err.message));
  apply(fsm, { op: "backup.delete", id: i2, by, at: 6 });
  apply(fsm, { op: "backup.delete", id: i1, by, at: 7 });
  assertEquals(fsm.backups.list().map((b) => b.id), [full]);
});

Deno.test("backup schedules: set, replaced, the due time only moves forward", async () => {
  const fsm = await fresh();
  apply(fsm, { op: "backup.target.create", target: { name: "t1", path: "/srv/b" }, by, at: 2 });
  const schedule = {
    vm: "web1",
    cron: "0 2 * * *",
    target: "t1",
    keepLast: 3,
    keepDaily: 0,
    keepWeekly: 0,
  };
  assert(
    refused(fsm, {
      op: "backup.schedule.set",
      schedule: { ...schedule, target: "nope" },
      by,
      at: 3,
    }) instanceof ValidationError,
  );
  apply(fsm, { op: "backup.schedule.set", schedule, by, at: 3 });
  apply(fsm, { op: "backup.schedule.ran", vm: "web1", dueAt: 100, at: 4 });
  apply(fsm, { op: "backup.schedule.ran", vm: "web1", dueAt: 50, at: 5 });
  assertEquals(fsm.backups.schedule("web1")?.lastRunAt, 100);
  apply(fsm, { op: "backup.schedule.set", schedule: { ...schedule, keepLast: 5 }, by, at: 6 });
  assertEquals(fsm.backups.schedule("web1")?.keepLast, 5);
  assertEquals(fsm.backups.schedule("web1")?.lastRunAt, 100);
  const used = refused(fsm, { op: "backup.target.delete", name: "t1", by, at: 7 });
  assert(/used by the schedules of web1/.test(used.message), used.message);
  apply(fsm, { op: "backup.schedule.delete", vm: "web1", by, at: 8 });
  assertEquals(fsm.backups.schedules(), []);
});
