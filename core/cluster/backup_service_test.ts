/**
 * Backup operations and schedules on a real one-voter leader (no QEMU: the
 * host side is tests/backup_test.ts): who runs each operation, what is
 * refused, and schedules that start backups when due (once, also after a
 * new tick at the same time) and prune by retention, chains kept.
 */
import { assert, assertEquals, assertRejects } from "../testing/assert.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { TestCluster } from "../testing/test_cluster.ts";
import type { BackupRecord } from "../fsm/mod.ts";
import { startBackup, startVerify } from "./backup_service.ts";
import { BackupScheduler } from "./backup_scheduler.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

testWithTimeout(
  { timeoutMs: 2 * MINUTE, name: "backups on the leader: operations and schedules", ...opts },
  async (t) => {
    const c = await TestCluster.start();
    const by = "t";
    /** Records a backup as a host would once it made one. */
    const record = async (id: string, parent: string | null, at: number) => {
      const chain = parent ? c.node.fsm.backups.get(parent)!.chain : id;
      await c.node.propose({
        op: "backup.record",
        backup: {
          id,
          vm: "web",
          target: "t1",
          kind: parent ? "incremental" : "full",
          parent,
          chain,
          dir: "web",
          manifest: `${id}.manifest.json`,
          manifestSha256: "0".repeat(64),
          disks: [],
          fullReason: null,
          node: "n2",
        },
        at,
      });
    };
    try {
      await c.addHost("n2");

      await t.step("a backup needs a VM, a target, and no other operation on it", async () => {
        await assertRejects(() => startBackup(c.node, { vm: "ghost" }, by), NotFoundError);
        await c.vm({ name: "web", node: "n2" }, "running");
        await c.vm({ name: "tpl", node: "n2", template: true, desired: "stopped" }, "stopped");
        const tpl = await assertRejects(
          () => startBackup(c.node, { vm: "tpl" }, by),
          ConflictError,
        );
        assert(/is a template/.test(tpl.message), tpl.message);
        const none = await assertRejects(
          () => startBackup(c.node, { vm: "web" }, by),
          ValidationError,
        );
        assertEquals(none.issues.map((i) => i.field), ["target"]);
        await c.node.propose({
          op: "backup.target.create",
          target: { name: "t1", path: "/srv/b" },
          by,
          at: Date.now(),
        });
        const op = await startBackup(c.node, { vm: "web", incremental: true }, by);
        assertEquals([op.kind, op.runner, op.target], ["backup", "n2", "web"]);
        assertEquals(op.params.target, "t1");
        assertEquals(op.params.incremental, true);
        assert(/^bk-[0-9a-f]{12}$/.test(String(op.params.backup)));
        const busy = await assertRejects(
          () => startBackup(c.node, { vm: "web" }, by),
          ConflictError,
        );
        assert(busy.message.includes(op.id), busy.message);
        await c.node.propose({
          op: "operation.update",
          id: op.id,
          state: "failed",
          at: Date.now(),
        });
      });

      await t.step("verify runs on the leader; an unknown backup is 404", async () => {
        await assertRejects(() => startVerify(c.node, "bk-000000000000", by), NotFoundError);
        await record("bk-000000000001", null, 1_000);
        const op = await startVerify(c.node, "bk-000000000001", by);
        assertEquals([op.kind, op.runner, op.target], ["verify", c.node.id, "bk-000000000001"]);
        await c.node.propose({
          op: "operation.update",
          id: op.id,
          state: "failed",
          at: Date.now(),
        });
      });

      await t.step(
        "a schedule starts one backup per due time, incremental on its chain",
        async () => {
          const now = Date.parse("2026-03-02T03:00:00Z");
          await c.node.propose({
            op: "backup.schedule.set",
            schedule: {
              vm: "web",
              cron: "0 2 * * *",
              target: "t1",
              keepLast: 2,
              keepDaily: 0,
              keepWeekly: 0,
            },
            by,
            at: now - 2 * 86_400_000, // set two days ago: today's 02:00 is due
          });
          const removed: string[] = [];
          const s = new BackupScheduler(c.node, (b: BackupRecord) => {
            removed.push(b.id);
            return Promise.resolve();
          });
          await s.tick(now);
          const backups = () =>
            c.node.fsm.operations().filter((o) =>
              o.kind === "backup" && o.by === "system:backup.schedule"
            );
          assertEquals(backups().length, 1);
          assertEquals(backups()[0].params.incremental, true);
          assertEquals(
            c.node.fsm.backups.schedule("web")?.lastRunAt,
            Date.parse("2026-03-02T02:00:00Z"),
          );
          await c.node.propose({
            op: "operation.update",
            id: backups()[0].id,
            state: "succeeded",
            at: now,
          });
          await s.tick(now + 60_000);
          assertEquals(backups().length, 1, "not again before the next due time");
          // Retention keepLast 2 over a chain full → i1 → i2 and a new full f2 → j1: the newest two
          // (j1, f2) stay, the first chain goes, newest first.
          await record("bk-000000000002", "bk-000000000001", 2_000);
          await record("bk-000000000003", "bk-000000000002", 3_000);
          await record("bk-000000000004", null, 4_000);
          await record("bk-000000000005", "bk-000000000004", 5_000);
          await s.tick(now + 120_000);
          assertEquals(removed, ["bk-000000000003", "bk-000000000002", "bk-000000000001"]);
          assertEquals(c.node.fsm.backups.list("web").map((b) => b.id), [
            "bk-000000000004",
            "bk-000000000005",
          ]);
        },
      );
    } finally {
      await c.stop();
    }
  },
);
