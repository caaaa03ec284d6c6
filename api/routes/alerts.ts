/**
 * /api/v1/alerts: alert rules and the alerts they raised (core/fsm/alerts.ts), evaluated by the
 * leader (core/cluster/alerts.ts).
 *
 * - `GET /?all=true&rule=NAME`: firing alerts (with `all`, the resolved ones kept too), newest
 *   first, `{alerts: [{id, rule, metric, subject, state, value, comparison, threshold, since,
 *   firedAt, resolvedAt, resolvedValue}]}` (times ISO 8601)
 * - `GET /metrics`: the metrics a rule may name, with what each measures
 * - `GET /rules`, `GET /rules/:name`
 * - `POST /rules` `{name, metric, above | below, for?: "5m", labels?, webhook?, enabled?}`
 * - `PATCH /rules/:name` `{above | below, for, labels, webhook (null: none), enabled}`, each
 *   optional; a change of what the rule measures resolves its alerts
 * - `DELETE /rules/:name` (resolves its alerts)
 *
 * Bad input is a 400 naming the field (`metric` lists the valid names); nothing is stored.
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import {
  ALERT_LIMITS,
  ALERT_METRIC_NAMES,
  ALERT_METRICS,
  ALERT_RULE_NAME,
  type AlertRecord,
  type AlertRuleRecord,
  type AlertRuleSpec,
  checkWebhook,
} from "../../core/fsm/alerts.ts";
import { labelsSchema } from "../../core/fsm/command_schemas.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody, parseDuration } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import { listBody, mapPage, pagedList, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery, queryFlag } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const THRESHOLD = z.number().finite().min(0, { message: "a number, 0 or more" });
const WEBHOOK = z.string().max(ALERT_LIMITS.webhookChars).superRefine((s, ctx) => {
  const why = checkWebhook(s);
  if (why) ctx.addIssue({ code: z.ZodIssueCode.custom, message: why });
});
const FOR = z.string().min(1).max(16);

const ruleFields = {
  above: THRESHOLD.optional(),
  below: THRESHOLD.optional(),
  for: FOR.optional(),
  labels: labelsSchema.optional(),
  webhook: WEBHOOK.nullable().optional(),
  enabled: z.boolean().optional(),
};

/** `POST /rules`: the CLI's flags as JSON. */
export const alertRuleSchema = z.object({
  name: z.string().regex(ALERT_RULE_NAME, {
    message: "lowercase letters, digits and '-' (1-63 chars)",
  }),
  metric: z.string().max(64).refine((m) => Object.hasOwn(ALERT_METRICS, m), (m) => ({
    message: `unknown metric "${m}"; one of ${ALERT_METRIC_NAMES.join(", ")}`,
  })),
  ...ruleFields,
}).strict().superRefine((r, ctx) => {
  if (r.above !== undefined && r.below !== undefined) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["below"],
      message: "above or below, not both",
    });
  } else if (r.above === undefined && r.below === undefined) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ["above"],
      message: "a threshold: above or below",
    });
  }
});

/** `PATCH /rules/:name`. */
export const alertRulePatchSchema = z.object(ruleFields).strict().refine(
  (r) => r.above === undefined || r.below === undefined,
  { message: "above or below, not both", path: ["below"] },
);

/** `for` in ms: a duration from 0 to 24h (400 naming `for` otherwise). */
function forMsOf(text: string): number {
  const ms = parseDuration(text, "for");
  if (ms > ALERT_LIMITS.maxForMs) throw ValidationError.field("for", "at most 24h");
  return ms;
}

const iso = (t: number) => new Date(t).toISOString();

/** A rule as the API shows it. */
export type AlertRuleView = Omit<AlertRuleRecord, "createdAt" | "updatedAt"> & {
  forSeconds: number;
  createdAt: string;
  updatedAt: string;
};

/** An alert as the API shows it (times ISO 8601). */
export type AlertView = Omit<AlertRecord, "since" | "firedAt" | "resolvedAt"> & {
  since: string;
  firedAt: string;
  resolvedAt: string | null;
};

/** A stored rule as the API answers it (`forSeconds`, times ISO 8601). */
export function ruleView(r: AlertRuleRecord): AlertRuleView {
  return {
    ...r,
    forSeconds: r.forMs / 1000,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
  };
}

/** A stored alert as the API answers it (times ISO 8601). */
export function alertView(a: AlertRecord): AlertView {
  return {
    ...a,
    since: iso(a.since),
    firedAt: iso(a.firedAt),
    resolvedAt: a.resolvedAt === null ? null : iso(a.resolvedAt),
  };
}

/** Mounted at `/api/v1/alerts`. */
const alertsQuery = pageQuery.extend({
  all: queryFlag.describe("resolved alerts too, not only firing ones"),
  rule: z.string().optional().describe("only this rule's alerts"),
});

export function alertRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const alerts = node.fsm.alerts;
  app.use("*", bearerAuth(node));
  withEtags(app, "/rules/:name", (c) => alerts.rule(c.req.param("name") ?? ""));

  const getDoc = doc({
    summary: "List firing alerts (or all)",
    response: listOf("alerts", recordSchema),
    query: alertsQuery,
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, alertsQuery);
    const { all, rule } = q;
    const list = all === "true"
      ? alerts.list(rule)
      : alerts.firing().filter((a) => rule === undefined || a.rule === rule);
    const page = paginate(list, q, { list: "alerts", key: (a) => a.id, order: "desc" });
    return c.json(listBody("alerts", mapPage(page, alertView)));
  });
  const getMetricsDoc = doc({
    summary: "The metrics alert rules may watch",
    query: pageQuery,
    response: listOf("metrics", recordSchema),
  });
  app.get("/metrics", getMetricsDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const metrics = ALERT_METRIC_NAMES.map((name) => ({ name, description: ALERT_METRICS[name] }));
    return c.json(pagedList("metrics", metrics, q, { list: "metrics", key: (m) => m.name }));
  });
  const getRulesDoc = doc({
    summary: "List alert rules",
    query: pageQuery,
    response: listOf("rules", recordSchema),
  });
  app.get("/rules", getRulesDoc, (c) => {
    const page = paginate(alerts.rules(), parseQuery(c, pageQuery), {
      list: "rules",
      key: (r) => r.name,
    });
    return c.json(listBody("rules", mapPage(page, ruleView)));
  });
  app.get("/rules/:name", doc({ summary: "Show an alert rule" }), (c) => {
    const r = alerts.rule(c.req.param("name"));
    if (!r) throw new NotFoundError("alert rule", c.req.param("name"));
    return c.json({
      ...ruleView(r),
      firing: alerts.firing().filter((a) => a.rule === r.name).map(alertView),
    });
  });
  const postRulesDoc = doc({ summary: "Create an alert rule", body: alertRuleSchema, status: 201 });
  app.post("/rules", postRulesDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const b = await parseBody(c, alertRuleSchema);
    const rule: AlertRuleSpec = {
      name: b.name,
      metric: b.metric,
      comparison: b.above !== undefined ? "above" : "below",
      threshold: (b.above ?? b.below)!,
      forMs: b.for === undefined ? 0 : forMsOf(b.for),
      labels: b.labels ?? {},
      webhook: b.webhook ?? null,
      enabled: b.enabled ?? true,
    };
    const r = await node.propose({ op: "alert.rule.create", rule, ...authorship(c) });
    return c.json(ruleView(r as AlertRuleRecord), 201);
  });
  const patchRulesDoc = doc({ summary: "Change an alert rule", body: alertRulePatchSchema });
  app.patch("/rules/:name", patchRulesDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const b = await parseBody(c, alertRulePatchSchema);
    const patch: Partial<Omit<AlertRuleSpec, "name">> = {};
    if (b.above !== undefined) Object.assign(patch, { comparison: "above", threshold: b.above });
    if (b.below !== undefined) Object.assign(patch, { comparison: "below", threshold: b.below });
    if (b.for !== undefined) patch.forMs = forMsOf(b.for);
    if (b.labels !== undefined) patch.labels = b.labels;
    if (b.webhook !== undefined) patch.webhook = b.webhook;
    if (b.enabled !== undefined) patch.enabled = b.enabled;
    const r = await node.propose({
      op: "alert.rule.update",
      name: c.req.param("name"),
      patch,
      ...authorship(c),
    });
    return c.json(ruleView(r as AlertRuleRecord));
  });
  const deleteRulesDoc = doc({ summary: "Delete an alert rule" });
  app.delete(
    "/rules/:name",
    deleteRulesDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const r = await node.propose({
        op: "alert.rule.delete",
        name: c.req.param("name"),
        ...authorship(c),
      }) as AlertRuleRecord & { resolved: number };
      return c.json({ name: r.name, deleted: true, resolved: r.resolved });
    },
  );
  return app;
}
