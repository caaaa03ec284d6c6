/**
 * /api/v1/audit: the replicated audit log, newest first. Reading it is
 * admin-only: it names every token, client address and target, which a
 * viewer (who may read everything else) has no need to see.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { ValidationError } from "../../core/errors/mod.ts";
import { MAX_LIST } from "../../core/fsm/audit.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { parseDuration } from "../../core/units.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";
import { afterOf, limitOf, listBody, pageOfRead, pageQueryOf } from "../pagination.ts";

/** Records a page holds without ?limit (the log keeps up to 100,000). */
const DEFAULT_PAGE = 100;

// The audit log's pages may be larger than other lists' (up to MAX_LIST): it is read in bulk.
const querySchema = pageQueryOf(MAX_LIST).extend({
  since: z.string().max(64).optional(),
  principal: z.string().min(1).max(256).optional(),
  resource: z.string().min(1).max(512).optional(),
}).strict();

/** A page's key: time (epoch ms) and log position, newest first. */
const isAuditKey = (k: unknown): k is [number, number] =>
  Array.isArray(k) && k.length === 2 && k.every((p) => typeof p === "number");

export function auditRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node), requireRole("admin"));
  const getDoc = doc({
    summary: `The audit log, newest first (${DEFAULT_PAGE} a page unless ?limit)`,
    query: querySchema,
    response: listOf("entries", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, querySchema);
    const limit = limitOf(q, DEFAULT_PAGE);
    const before = afterOf("audit", q.continue, isAuditKey);
    const entries = node.fsm.auditEntries({
      since: q.since === undefined ? undefined : parseSince(q.since, Date.now()),
      principal: q.principal,
      resource: q.resource,
      limit: limit + 1,
      ...(before ? { before } : {}),
    });
    const page = pageOfRead(entries, limit, { list: "audit", key: (e) => [e.at, e.id] });
    return c.json(listBody("entries", page));
  });
  return app;
}

/**
 * `since` as epoch ms: an ISO time, epoch milliseconds, or an age (`90s`,
 * `15m`, `1h`, `7d`) counted back from `now`.
 */
export function parseSince(since: string, now: number): number {
  // A bare number is epoch ms, not an age: only a spelled-out unit makes an age.
  const age = /[a-z]$/.test(since.trim()) ? parseDuration(since) : undefined;
  if (age !== undefined) return now - age;
  if (/^\d+$/.test(since)) return Number(since);
  const t = Date.parse(since);
  if (Number.isNaN(t)) {
    throw ValidationError.field("since", "an ISO time, epoch ms, or an age like 1h, 30m, 7d");
  }
  return t;
}
