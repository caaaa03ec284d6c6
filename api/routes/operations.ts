/**
 * /api/v1/operations: long operations (migrations, drains, backups, restores, verifies, VM
 * snapshots) with progress, a wait endpoint and abort; and how calls that start one answer.
 */
import { type Context, Hono } from "hono";
import { z } from "zod";
import { type ClusterNode, waitForOperation } from "../../core/cluster/mod.ts";
import { ConflictError, type ErrorCode, NotFoundError, NovaError } from "../../core/errors/mod.ts";
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

/** Operations that follow a VM's desired state (core/fsm/vm_operations.ts). */
const VM_LIFECYCLE_KINDS: ReadonlySet<string> = new Set([
  "create",
  "start",
  "stop",
  "restart",
  "delete",
]);

/**
 * `?wait=SECONDS` on a call that starts an operation: wait up to that long (at most 300)
 * for the operation; absent: answer at once.
 */
export const operationWaitSeconds = z.string().regex(/^\d+$/).optional().describe(
  "wait up to this many seconds (at most 300) for the operation: once it ended, the answer " +
    "of the finished call (or its error); still running: 202 with the operation; absent: " +
    "202 at once",
);

/** 202 with the operation, and its URL in `Location`. */
export function operationAccepted(c: Context, op: OperationRecord): Response {
  c.header("Location", `/api/v1/operations/${encodeURIComponent(op.id)}`);
  return c.json(op, 202);
}

/**
 * The answer to a call that started `op`: without `wait`, 202 with it at once; with
 * `wait` (seconds), once it ended `done(op)` when it succeeded, else its error (with the
 * code its runner recorded, so the status is what the work's own failure would give); at
 * the deadline 202 with it, still running.
 */
export async function operationAnswer(
  c: Context,
  node: ClusterNode,
  op: OperationRecord,
  wait: string | undefined,
  done: (op: OperationRecord) => Response,
): Promise<Response> {
  if (wait === undefined) return operationAccepted(c, op);
  const timeoutMs = Math.min(Number(wait) * 1000, MAX_WAIT_MS);
  const now = await waitForOperation(node, op.id, { timeoutMs, signal: c.req.raw.signal });
  if (now.state === "running") return operationAccepted(c, now);
  if (now.state === "succeeded") return done(now);
  const code = typeof now.result?.errorCode === "string" ? now.result.errorCode : "conflict";
  throw new NovaError(code as ErrorCode, now.error ?? `operation ${now.id} ${now.state}`, {
    operation: now.id,
    state: now.state,
  });
}

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
    if (VM_LIFECYCLE_KINDS.has(op.kind) && op.state === "running") {
      // Nothing runs it to abort: a later start, stop or delete of the VM supersedes it.
      throw new ConflictError(
        `operation ${op.id} follows a VM's ${op.kind} and cannot be aborted: start, stop or delete ${op.target} instead`,
      );
    }
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
