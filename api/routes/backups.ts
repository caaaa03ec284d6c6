/**
 * /api/v1/backup-targets, /api/v1/backups and /api/v1/backup-schedules: backup
 * targets (directories every host can write), the backups in them, and VMs'
 * backup schedules. The index is core/fsm/backups.ts, the format and host side
 * host/backup/, the operations core/cluster/backup_service.ts.
 *
 * Targets (admin: they point every host at a path it writes as root):
 * - `POST /` `{name, path}`; `GET /`; `GET /:name`; `DELETE /:name` (409 while it holds backups)
 *
 * Backups (every backup, verify and restore is an operation: 202 with it, then
 * `GET /api/v1/operations/:id/wait`; abort with `POST /api/v1/operations/:id/abort`):
 * - `POST /` `{vm, target?, incremental?}` backs a VM up
 * - `GET /?vm=`; `GET /:id` (with its chain and the backups built on it)
 * - `DELETE /:id` (409 while other backups build on it: newest first)
 * - `POST /:id/verify`; `POST /:id/restore` `{as, node?, start?}` or `{inPlace: true}`
 *
 * Schedules, per VM (run by the leader, core/cluster/backup_scheduler.ts):
 * - `PUT /:vm` `{cron, target?, keepLast, keepDaily, keepWeekly}`; `GET /`; `GET /:vm`; `DELETE /:vm`
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import {
  mustGetBackup,
  startBackup,
  startRestore,
  startVerify,
} from "../../core/cluster/backup_service.ts";
import { checkCron } from "../../core/cluster/backup_scheduler.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { BACKUP_LIMITS, BACKUP_TARGET_NAME, type BackupRecord } from "../../core/fsm/backups.ts";
import { log } from "../../core/log/mod.ts";
import { checkRestorable, removeBackupFiles } from "../../host/backup/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import { pagedList, pageQuery } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const VM_NAME = z.string().min(1).max(63);
const TARGET_NAME = z.string().regex(BACKUP_TARGET_NAME, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});

const targetSchema = z.object({
  name: TARGET_NAME,
  path: z.string().min(1).max(BACKUP_LIMITS.pathChars).refine((p) => p.startsWith("/"), {
    message: "an absolute path",
  }),
}).strict();

const backupSchema = z.object({
  vm: VM_NAME,
  target: TARGET_NAME.optional(),
  incremental: z.boolean().default(false),
}).strict();

const restoreSchema = z.object({
  as: VM_NAME.regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
    message: "lowercase letters, digits and '-' (1-63 chars)",
  }).optional(),
  inPlace: z.boolean().optional(),
  node: z.string().min(1).max(253).optional(),
  start: z.boolean().default(false),
}).strict().refine((r) => !!r.as !== !!r.inPlace, {
  message: "give either a new VM name (as) or inPlace: true",
  path: ["as"],
});

const KEEP = z.number().int().min(0).max(10_000);
const scheduleSchema = z.object({
  cron: z.string().min(1).max(128).superRefine((s, ctx) => {
    const why = checkCron(s);
    if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
  }),
  target: TARGET_NAME.optional(),
  keepLast: KEEP.default(0),
  keepDaily: KEEP.default(0),
  keepWeekly: KEEP.default(0),
}).strict().refine((s) => s.keepLast + s.keepDaily + s.keepWeekly > 0, {
  message: "keep at least one backup (keepLast, keepDaily or keepWeekly)",
  path: ["keepLast"],
});

const by = (c: { get(k: "principal"): { name: string } }) => c.get("principal").name;

/** `/api/v1/backup-targets`. */
const listQuery = pageQuery.extend({
  vm: z.string().optional().describe("only this VM's backups"),
});

export function backupTargetRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const backups = node.fsm.backups;
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => backups.target(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List backup targets",
    query: pageQuery,
    response: listOf("targets", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    return c.json(
      pagedList("targets", backups.targets(), q, { list: "targets", key: (t) => t.name }),
    );
  });
  app.get("/:name", doc({ summary: "Show a backup target" }), (c) => {
    const t = backups.target(c.req.param("name"));
    if (!t) throw new NotFoundError("backup target", c.req.param("name"));
    return c.json({ ...t, backups: backups.list().filter((b) => b.target === t.name).length });
  });
  const postDoc = doc({ summary: "Create a backup target", body: targetSchema, status: 201 });
  app.post("/", postDoc, requireRole("admin"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, targetSchema);
    const path = body.path.replace(/\/+$/, "") || "/";
    const t = await node.propose({
      op: "backup.target.create",
      target: { name: body.name, path },
      ...authorship(c),
    });
    return c.json(t, 201);
  });
  const deleteDoc = doc({ summary: "Delete a backup target" });
  app.delete("/:name", deleteDoc, requireRole("admin"), leaderOnly(node), async (c) => {
    return c.json(
      await node.propose({
        op: "backup.target.delete",
        name: c.req.param("name"),
        ...authorship(c),
      }),
    );
  });
  return app;
}

/** `/api/v1/backups`: backups, verify, restore, delete. */
export function backupRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const backups = node.fsm.backups;
  app.use("*", bearerAuth(node));
  withEtags(app, "/:id", (c) => backups.get(c.req.param("id") ?? ""));
  const getDoc2 = doc({
    summary: "List backups",
    response: listOf("backups", recordSchema),
    query: listQuery,
  });
  app.get("/", getDoc2, (c) => {
    const q = parseQuery(c, listQuery);
    const spec = { list: "backups", key: (b: BackupRecord) => [b.createdAt, b.id] };
    return c.json(pagedList("backups", backups.list(q.vm || undefined), q, spec));
  });
  app.get("/:id", doc({ summary: "Show a backup" }), (c) => {
    const b = mustGetBackup(node, c.req.param("id"));
    return c.json({
      ...b,
      chainIds: backups.chainOf(b.id).map((x) => x.id),
      children: backups.children(b.id),
    });
  });
  const postDoc2 = doc({
    summary: "Back up a VM (202 with the operation)",
    body: backupSchema,
    status: 202,
  });
  app.post("/", postDoc2, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, backupSchema);
    return c.json(await startBackup(node, body, by(c)), 202);
  });
  const deleteIdDoc = doc({ summary: "Delete a backup" });
  app.delete("/:id", deleteIdDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const b = mustGetBackup(node, c.req.param("id"));
    await node.propose({ op: "backup.delete", id: b.id, ...authorship(c) });
    // The record is gone first: a crash here leaves unlisted files, never a listed backup
    // without its files.
    const t = backups.target(b.target);
    if (t) {
      await removeBackupFiles(t.path, b).catch((err) =>
        log.warn("cannot remove a deleted backup's files", { backup: b.id, error: String(err) })
      );
    }
    return c.json({ id: b.id, deleted: true });
  });
  const postVerifyDoc = doc({
    summary: "Verify a backup's checksums (202 with the operation)",
    status: 202,
  });
  app.post("/:id/verify", postVerifyDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(await startVerify(node, c.req.param("id"), by(c)), 202);
  });
  const postRestoreDoc = doc({
    summary: "Restore a backup as a new VM (202 with the operation)",
    body: restoreSchema,
    status: 202,
  });
  app.post("/:id/restore", postRestoreDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, restoreSchema);
    const b = mustGetBackup(node, c.req.param("id"));
    const t = backups.target(b.target);
    if (!t) throw new NotFoundError("backup target", b.target);
    // The whole chain checked, and its newest manifest read, before anything is created.
    const top = await checkRestorable(t.path, backups.chainOf(b.id));
    const op = await startRestore(node, b.id, body, {
      spec: top.spec,
      disks: top.disks.map((d) => ({ id: d.id, virtualBytes: d.virtualBytes })),
    }, by(c));
    return c.json(op, 202);
  });
  return app;
}

/** `/api/v1/backup-schedules`. */
export function backupScheduleRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const backups = node.fsm.backups;
  app.use("*", bearerAuth(node));
  withEtags(app, "/:vm", (c) => backups.schedule(c.req.param("vm") ?? ""));
  const getDoc3 = doc({
    summary: "List backup schedules",
    query: pageQuery,
    response: listOf("schedules", recordSchema),
  });
  app.get("/", getDoc3, (c) => {
    const q = parseQuery(c, pageQuery);
    return c.json(
      pagedList("schedules", backups.schedules(), q, { list: "schedules", key: (s) => s.vm }),
    );
  });
  app.get("/:vm", doc({ summary: "Show a VM's backup schedule" }), (c) => {
    const s = backups.schedule(c.req.param("vm"));
    if (!s) throw new NotFoundError("backup schedule", c.req.param("vm"));
    return c.json(s);
  });
  const putDoc = doc({ summary: "Set a VM's backup schedule", body: scheduleSchema });
  app.put("/:vm", putDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const vm = c.req.param("vm");
    const body = await parseBody(c, scheduleSchema);
    if (!node.fsm.vm(vm)) throw new NotFoundError("vm", vm);
    const last = backups.list(vm).pop();
    const target = body.target ?? last?.target ?? backups.targets()[0]?.name;
    const s = await node.propose({
      op: "backup.schedule.set",
      schedule: {
        vm,
        cron: body.cron,
        target: target ?? "",
        keepLast: body.keepLast,
        keepDaily: body.keepDaily,
        keepWeekly: body.keepWeekly,
      },
      ...authorship(c),
    });
    return c.json(s);
  });
  const deleteVmDoc = doc({ summary: "Remove a VM's backup schedule" });
  app.delete("/:vm", deleteVmDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(
      await node.propose({
        op: "backup.schedule.delete",
        vm: c.req.param("vm"),
        ...authorship(c),
      }),
    );
  });
  return app;
}
