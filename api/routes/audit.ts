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

const querySchema = z.object({
  since: z.string().max(64).optional(),
  principal: z.string().min(1).max(256).optional(),
  resource: z.string().min(1).max(512).optional(),
  limit: z.coerce.number().int().min(1).max(MAX_LIST).default(100),
}).strict();

export function auditRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node), requireRole("admin"));
  app.get("/", doc({ summary: "The audit log, newest first", query: querySchema }), (c) => {
    const q = parseQuery(c, querySchema);
    const entries = node.fsm.auditEntries({
      since: q.since === undefined ? undefined : parseSince(q.since, Date.now()),
      principal: q.principal,
      resource: q.resource,
      limit: q.limit,
    });
    return c.json({ entries });
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
