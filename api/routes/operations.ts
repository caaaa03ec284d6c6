/**
 * /api/v1/operations: long operations (migrations, drains, backups, restores, verifies) with
 * progress, a wait endpoint and abort.
 */
import { Hono } from "hono";
import { z } from "zod";
import { type ClusterNode, waitForOperation } from "../../core/cluster/mod.ts";
import { ConflictError, NotFoundError } from "../../core/errors/mod.ts";
import type { OperationRecord } from "../../core/fsm/mod.ts";
/** What runs operations on this node and can abort them (the migrator, the backup runner). */
export interface OperationAborter {
  /** Aborts the operation if it runs here; false when it does not. */
  abort(opId: string): boolean;
}
import { bearerAuth, requireRole } from "../auth.ts";
import { runsOn } from "../forward.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { operationListSchema, operationSchema } from "../openapi/schemas.ts";
import { withEtags } from "../etag.ts";
import { afterOf, limitOf, listBody, MAX_PAGE, pageOfRead, pageQuery } from "../pagination.ts";

/** A page's key: creation time (epoch ms) and id, newest first. */
const isOpKey = (k: unknown): k is [number, string] =>
  Array.isArray(k) && k.length === 2 && typeof k[0] === "number" && typeof k[1] === "string";

const MAX_WAIT_MS = 300_000;

const waitQuery = z.object({
  timeoutMs: z.string().regex(/^\d+$/).optional().describe("at most 300000 (default 60000)"),
});

export function operationRoutes(node: ClusterNode, runners: OperationAborter[]): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));
  withEtags(app, "/:id", (c) => node.fsm.operation(c.req.param("id") ?? ""));
  const get = (id: string) => {
    const op = node.fsm.operation(id);
    if (!op) throw new NotFoundError("operation", id);
    return op;
  };

  const getDoc = doc({
    summary: `List operations, newest first (${MAX_PAGE} a page unless ?limit)`,
    query: pageQuery,
    response: operationListSchema,
  });
  // Read off the index a page at a time: the table may hold 100,000 operations.
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const limit = limitOf(q, MAX_PAGE);
    const before = afterOf("operations", q.continue, isOpKey);
    const ops = node.fsm.operationPage({ limit: limit + 1, ...(before ? { before } : {}) });
    const key = (o: OperationRecord) => [Date.parse(o.createdAt), o.id];
    return c.json(listBody("operations", pageOfRead(ops, limit, { list: "operations", key })));
  });
  const getIdDoc = doc({ summary: "Show an operation", response: operationSchema });
  app.get("/:id", getIdDoc, (c) => c.json(get(c.req.param("id"))));

  // Long-poll until the operation finishes (or `timeoutMs` passes: then 200 with state "running").
  const getWaitDoc = doc({
    summary: "Wait for an operation to finish (at the timeout: still running)",
    query: waitQuery,
    response: operationSchema,
  });
  app.get("/:id/wait", getWaitDoc, async (c) => {
    const q = parseQuery(c, waitQuery);
    const timeoutMs = Math.min(Number(q.timeoutMs ?? 60_000) || 60_000, MAX_WAIT_MS);
    return c.json(
      await waitForOperation(node, c.req.param("id"), { timeoutMs, signal: c.req.raw.signal }),
    );
  });

  // Abort runs where the operation runs.
  const onRunner = runsOn(node, (c) => {
    const op = get(c.req.param("id") ?? "");
    return { member: op.runner, what: `operation ${op.id}` };
  });
  const postAbortDoc = doc({ summary: "Abort a running operation", status: 202 });
  app.post("/:id/abort", postAbortDoc, requireRole("operator"), onRunner, (c) => {
    const op = get(c.req.param("id"));
    if (op.state !== "running") throw new ConflictError(`operation ${op.id} already ${op.state}`);
    if (!runners.some((r) => r.abort(op.id))) {
      throw new ConflictError(`operation ${op.id} is not running on ${node.id} yet; retry`);
    }
    return c.json({ id: op.id, aborting: true }, 202);
  });
  return app;
}
