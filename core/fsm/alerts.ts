/**
 * Alerts (issue 13): the replicated rules, and the alerts they raised. A rule
 * names a metric of a VM, a host or the cluster, a comparison with a
 * threshold, how long the condition must hold (`forMs`), a label selector
 * and an optional webhook. The leader evaluates the rules
 * (core/cluster/alerts.ts) and proposes `alert.fire` and `alert.resolve`, so
 * what is firing is in every replica: a new leader neither forgets a firing
 * alert nor notifies it again.
 *
 * An alert is one rule on one subject (a VM's name, a host's name, or
 * `cluster`). Invariants, kept by the appliers:
 * - at most one firing alert per rule and subject (a repeated fire is a no-op);
 * - an alert's rule exists while it fires (deleting a rule resolves its alerts);
 * - resolved alerts are bounded: the newest {@link ALERT_LIMITS.resolved} are kept, none older
 *   than {@link ALERT_LIMITS.resolvedMaxAgeMs} (pruned while applying, by the command's time, so
 *   every replica keeps the same rows).
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { NODE_STATE, VM_STATE } from "./command_schemas.ts";
import { type Applied, applied, DAY_MS, type Resource, type Row, type Store } from "./store.ts";

/** Rule names: as pools and networks (they appear in paths, logs and webhooks). */
export const ALERT_RULE_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Caps: every row is in every replica and snapshot. */
export const ALERT_LIMITS = {
  rules: 256,
  /** Resolved alerts kept (the newest). */
  resolved: 1_000,
  /** Resolved alerts older than this are pruned. */
  resolvedMaxAgeMs: 30 * DAY_MS,
  /** Firing alerts at once (a rule over many VMs). */
  firing: 10_000,
  webhookChars: 2048,
  /** The longest `for`: a day. */
  maxForMs: DAY_MS,
} as const;

const VM_STATES = VM_STATE.options;
const NODE_STATES = NODE_STATE.options;

/**
 * The metrics a rule may name, with what each measures. `vm.*` are read from the VM's host's
 * newest sample (host/metrics/), `host.*` from each host's, `cluster.*` from the state machine.
 */
export const ALERT_METRICS: Readonly<Record<string, string>> = {
  "vm.cpu": "CPU in percent of one host CPU",
  "vm.memory": "QEMU's resident memory, bytes",
  "vm.disk.read": "disk reads, bytes/s",
  "vm.disk.write": "disk writes, bytes/s",
  "vm.disk.read_ops": "disk reads, operations/s",
  "vm.disk.write_ops": "disk writes, operations/s",
  "vm.net.rx": "network received, bytes/s",
  "vm.net.tx": "network sent, bytes/s",
  "host.cpu": "CPU busy, percent of all CPUs",
  "host.memory": "memory used, percent",
  "host.memory.bytes": "memory used, bytes",
  "host.disk": "data directory's filesystem used, percent",
  "host.load": "1-minute load average",
  "host.vms": "QEMUs running on the host",
  ...Object.fromEntries(VM_STATES.map((s) => [`cluster.vms.${s}`, `VMs ${s}`])),
  "cluster.vms": "VMs in total",
  ...Object.fromEntries(NODE_STATES.map((s) => [`cluster.nodes.${s}`, `hosts ${s}`])),
};

/** Every metric name, sorted (as a 400 lists them). */
export const ALERT_METRIC_NAMES: readonly string[] = Object.keys(ALERT_METRICS).sort();

/** What a rule's metric is measured on. */
export type AlertScope = "vm" | "host" | "cluster";

/** The scope of `metric` (`vm.cpu` → `vm`). */
export function scopeOf(metric: string): AlertScope {
  return metric.split(".")[0] as AlertScope;
}

/** A rule as a user gives it. */
export interface AlertRuleSpec {
  name: string;
  metric: string;
  /** Fires when the value is above (`>`) or below (`<`) the threshold. */
  comparison: "above" | "below";
  threshold: number;
  /** How long the condition must hold before the alert fires (ms; 0: at once). */
  forMs: number;
  /** Which VMs (`vm.*`) or hosts (`host.*`) the rule watches: all these labels; {}: every one. */
  labels: Record<string, string>;
  /** Where firing and resolved alerts are POSTed (http or https); null: nowhere. */
  webhook: string | null;
  enabled: boolean;
}

/** A rule as stored. */
export interface AlertRuleRecord extends AlertRuleSpec {
  createdAt: number;
  updatedAt: number;
  by: string;
}

/** One alert: a rule's condition on one subject. */
export interface AlertRecord {
  /** A number given in order of firing (the row's key). */
  id: number;
  rule: string;
  metric: string;
  /** The VM's or host's name, or `cluster`. */
  subject: string;
  state: "firing" | "resolved";
  comparison: "above" | "below";
  threshold: number;
  /** The value that fired it. */
  value: number;
  /** When the condition started to hold (the start of the `for` window). */
  since: number;
  firedAt: number;
  resolvedAt: number | null;
  /** The value when it resolved (null: the subject went away, or the rule was deleted or disabled). */
  resolvedValue: number | null;
}

/** Commands of this resource. */
export type AlertCommand =
  | { op: "alert.rule.create"; rule: AlertRuleSpec; by: string; at: number }
  | {
    op: "alert.rule.update";
    name: string;
    patch: Partial<Omit<AlertRuleSpec, "name">>;
    by: string;
    at: number;
  }
  | { op: "alert.rule.delete"; name: string; by: string; at: number }
  | {
    op: "alert.fire";
    rule: string;
    subject: string;
    value: number;
    since: number;
    at: number;
  }
  | { op: "alert.resolve"; rule: string; subject: string; value: number | null; at: number };

/** What `alert.fire` and `alert.resolve` answer: the alert, and whether this entry changed it. */
export interface AlertChange {
  alert: AlertRecord | null;
  changed: boolean;
}

const TABLES = [
  {
    name: "alert_rules",
    ddl: `CREATE TABLE IF NOT EXISTS alert_rules (name TEXT PRIMARY KEY, data TEXT NOT NULL);`,
  },
  {
    name: "alerts",
    ddl: `CREATE TABLE IF NOT EXISTS alerts (
      id INTEGER PRIMARY KEY, rule TEXT NOT NULL, subject TEXT NOT NULL, state TEXT NOT NULL,
      resolved_at INTEGER, data TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS alerts_firing ON alerts (rule, subject, state);
      CREATE INDEX IF NOT EXISTS alerts_resolved ON alerts (state, resolved_at);`,
  },
];

// ---- validation ---------------------------------------------------------------------------

/**
 * Throws a ValidationError naming the field unless `r` is a valid rule (the API checks the same
 * with zod first; the applier checks again, whatever the proposer).
 */
export function checkRule(r: AlertRuleSpec): void {
  if (!ALERT_RULE_NAME.test(r.name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  if (!Object.hasOwn(ALERT_METRICS, r.metric)) {
    throw ValidationError.field(
      "metric",
      `unknown metric "${r.metric}"; one of ${ALERT_METRIC_NAMES.join(", ")}`,
    );
  }
  if (r.comparison !== "above" && r.comparison !== "below") {
    throw ValidationError.field("comparison", `"above" or "below"`);
  }
  if (!Number.isFinite(r.threshold) || r.threshold < 0) {
    throw ValidationError.field("threshold", "a number, 0 or more");
  }
  if (!Number.isInteger(r.forMs) || r.forMs < 0 || r.forMs > ALERT_LIMITS.maxForMs) {
    throw ValidationError.field("for", "a duration from 0 to 24h");
  }
  if (scopeOf(r.metric) === "cluster" && Object.keys(r.labels).length) {
    throw ValidationError.field("labels", "cluster metrics have no labels to select");
  }
  if (r.webhook !== null) {
    const why = checkWebhook(r.webhook);
    if (why) throw ValidationError.field("webhook", why);
  }
}

/** Why `url` is not a webhook URL (http or https, at most 2048 chars, no credentials), or null. */
export function checkWebhook(url: string): string | null {
  if (url.length > ALERT_LIMITS.webhookChars) {
    return `at most ${ALERT_LIMITS.webhookChars} characters`;
  }
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `"${url}" is not a URL`;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return "an http or https URL";
  if (u.username || u.password) return "no credentials in the URL (they would be in every replica)";
  return null;
}

/** Whether `value` meets `rule`'s condition. */
export function holds(rule: Pick<AlertRuleSpec, "comparison" | "threshold">, value: number) {
  return rule.comparison === "above" ? value > rule.threshold : value < rule.threshold;
}

// ---- reads --------------------------------------------------------------------------------

/** Rule `name`, or null. */
export function rule(s: Store, name: string): AlertRuleRecord | null {
  const row = s.sql("SELECT data FROM alert_rules WHERE name = ?").get(name) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

/** Every rule, by name. */
export function rules(s: Store): AlertRuleRecord[] {
  return (s.sql("SELECT data FROM alert_rules ORDER BY name").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

/** The firing alerts, oldest first. */
export function firing(s: Store): AlertRecord[] {
  return (s.sql("SELECT data FROM alerts WHERE state = 'firing' ORDER BY id").all() as Row[])
    .map((r) => JSON.parse(String(r.data)));
}

/** Every alert kept (firing and resolved), newest first; of one rule when `rule` is given. */
export function list(s: Store, ruleName?: string): AlertRecord[] {
  const rows = ruleName === undefined
    ? s.sql("SELECT data FROM alerts ORDER BY id DESC").all()
    : s.sql("SELECT data FROM alerts WHERE rule = ? ORDER BY id DESC").all(ruleName);
  return (rows as Row[]).map((r) => JSON.parse(String(r.data)));
}

function firingOf(s: Store, ruleName: string, subject: string): AlertRecord | null {
  const row = s.sql(
    "SELECT data FROM alerts WHERE rule = ? AND subject = ? AND state = 'firing'",
  ).get(ruleName, subject) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

/** Read-only access for callers outside the state machine (API, the leader's evaluator). */
export interface AlertReads {
  rule(name: string): AlertRuleRecord | null;
  rules(): AlertRuleRecord[];
  firing(): AlertRecord[];
  list(rule?: string): AlertRecord[];
}

/** The read-only view of this resource over `s`. */
export function readsOf(s: Store): AlertReads {
  return {
    rule: (name) => rule(s, name),
    rules: () => rules(s),
    firing: () => firing(s),
    list: (r) => list(s, r),
  };
}

// ---- appliers -----------------------------------------------------------------------------

function writeRule(s: Store, r: AlertRuleRecord): void {
  s.sql(
    `INSERT INTO alert_rules (name, data) VALUES (?, ?)
     ON CONFLICT(name) DO UPDATE SET data = excluded.data`,
  ).run(r.name, JSON.stringify(r));
}

function writeAlert(s: Store, a: AlertRecord): void {
  s.sql(
    `INSERT INTO alerts (id, rule, subject, state, resolved_at, data) VALUES (?, ?, ?, ?, ?, ?)
     ON CONFLICT(id) DO UPDATE SET state = excluded.state, resolved_at = excluded.resolved_at,
       data = excluded.data`,
  ).run(a.id, a.rule, a.subject, a.state, a.resolvedAt, JSON.stringify(a));
}

function createRule(s: Store, c: Extract<AlertCommand, { op: "alert.rule.create" }>): Applied {
  checkRule(c.rule);
  if (rule(s, c.rule.name)) {
    throw new ConflictError(`name: alert rule "${c.rule.name}" already exists`, { field: "name" });
  }
  const n = Number((s.sql("SELECT COUNT(*) AS n FROM alert_rules").get() as Row).n);
  if (n >= ALERT_LIMITS.rules) throw new ConflictError(`at most ${ALERT_LIMITS.rules} alert rules`);
  const rec: AlertRuleRecord = { ...c.rule, createdAt: c.at, updatedAt: c.at, by: c.by };
  writeRule(s, rec);
  return applied(rec, { resource: "alertRule", name: rec.name });
}

function updateRule(s: Store, c: Extract<AlertCommand, { op: "alert.rule.update" }>): Applied {
  const old = rule(s, c.name);
  if (!old) throw new NotFoundError("alert rule", c.name);
  const rec: AlertRuleRecord = { ...old, ...c.patch, name: old.name, updatedAt: c.at, by: c.by };
  checkRule(rec);
  writeRule(s, rec);
  // A rule that changed what it measures, or stopped, resolves what it raised: the leader
  // evaluates it afresh.
  if (
    !rec.enabled || rec.metric !== old.metric || rec.comparison !== old.comparison ||
    rec.threshold !== old.threshold || JSON.stringify(rec.labels) !== JSON.stringify(old.labels)
  ) {
    resolveAllOf(s, c.name, c.at);
  }
  return applied(rec, { resource: "alertRule", name: rec.name });
}

function deleteRule(s: Store, c: Extract<AlertCommand, { op: "alert.rule.delete" }>): Applied {
  const old = rule(s, c.name);
  if (!old) throw new NotFoundError("alert rule", c.name);
  s.sql("DELETE FROM alert_rules WHERE name = ?").run(c.name);
  const resolved = resolveAllOf(s, c.name, c.at);
  return applied({ ...old, deleted: true, resolved }, { resource: "alertRule", name: c.name });
}

function resolveAllOf(s: Store, ruleName: string, at: number): number {
  const open = firing(s).filter((a) => a.rule === ruleName);
  for (const a of open) writeAlert(s, { ...a, state: "resolved", resolvedAt: at });
  prune(s, at);
  return open.length;
}

function fire(s: Store, c: Extract<AlertCommand, { op: "alert.fire" }>): Applied {
  const r = rule(s, c.rule);
  // The rule went (or stopped) after the leader evaluated it: nothing fires.
  if (!r || !r.enabled) return applied({ alert: null, changed: false } satisfies AlertChange);
  const open = firingOf(s, c.rule, c.subject);
  // A leader that proposed it twice (a retried proposal): the first one stands.
  if (open) return applied({ alert: open, changed: false } satisfies AlertChange);
  const count = Number(
    (s.sql("SELECT COUNT(*) AS n FROM alerts WHERE state = 'firing'").get() as Row).n,
  );
  if (count >= ALERT_LIMITS.firing) {
    throw new ConflictError(`at most ${ALERT_LIMITS.firing} firing alerts`);
  }
  const last = s.sql("SELECT MAX(id) AS hi FROM alerts").get() as { hi: number | null };
  const a: AlertRecord = {
    id: (last.hi ?? 0) + 1,
    rule: r.name,
    metric: r.metric,
    subject: c.subject,
    state: "firing",
    comparison: r.comparison,
    threshold: r.threshold,
    value: c.value,
    since: c.since,
    firedAt: c.at,
    resolvedAt: null,
    resolvedValue: null,
  };
  writeAlert(s, a);
  return applied({ alert: a, changed: true } satisfies AlertChange, {
    resource: "alert",
    name: `${a.rule}/${a.subject}`,
  });
}

function resolve(s: Store, c: Extract<AlertCommand, { op: "alert.resolve" }>): Applied {
  const open = firingOf(s, c.rule, c.subject);
  if (!open) return applied({ alert: null, changed: false } satisfies AlertChange);
  const a: AlertRecord = { ...open, state: "resolved", resolvedAt: c.at, resolvedValue: c.value };
  writeAlert(s, a);
  prune(s, c.at);
  return applied({ alert: a, changed: true } satisfies AlertChange, {
    resource: "alert",
    name: `${a.rule}/${a.subject}`,
  });
}

/** Drops resolved alerts beyond the newest {@link ALERT_LIMITS.resolved} or older than the max age. */
function prune(s: Store, at: number): void {
  s.sql("DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < ?").run(
    at - ALERT_LIMITS.resolvedMaxAgeMs,
  );
  s.sql(
    `DELETE FROM alerts WHERE state = 'resolved' AND id NOT IN (
       SELECT id FROM alerts WHERE state = 'resolved' ORDER BY resolved_at DESC, id DESC LIMIT ?)`,
  ).run(ALERT_LIMITS.resolved);
}

/** Alert rules and alerts. */
export const resource: Resource<AlertCommand["op"]> = {
  tables: TABLES,
  appliers: {
    "alert.rule.create": createRule,
    "alert.rule.update": updateRule,
    "alert.rule.delete": deleteRule,
    "alert.fire": fire,
    "alert.resolve": resolve,
  },
};
