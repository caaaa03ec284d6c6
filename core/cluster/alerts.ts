/**
 * Alert rules, evaluated by the leader (issue 13). Every sampling interval
 * (`NOVACTL_METRICS_INTERVAL_MS`, default 10 s) the leader reads each enabled
 * rule's current values, runs the evaluator (alert_evaluator.ts: pending for
 * the `for` window, then firing, then resolved), proposes `alert.fire` and
 * `alert.resolve` (core/fsm/alerts.ts), and, once one is applied and changed
 * something, POSTs the rule's webhook (webhook.ts) without waiting for it.
 *
 * Where values come from:
 * - `cluster.*`: the state machine (VMs by state, hosts by state);
 * - `vm.*` and `host.*`: each host's newest sample. The leader pulls it from
 *   each host that has a subject to evaluate, with one small signed peer
 *   request (`GET /internal/metrics/latest`, as forwarding reaches members,
 *   api/forward.ts), in parallel with a short timeout; its own from its
 *   sampler directly. Samples are not replicated: they change every
 *   interval, and in the Raft log they would cost every replica a write and
 *   snapshot bytes per host and VM every 10 s, to serve one reader. Pulling
 *   costs one request per host per interval, only while a rule needs it, and
 *   a host that does not answer (or whose sample is older than three
 *   intervals) gives unknown values, which decide nothing.
 *
 * Subjects: a `vm.*` rule watches the running VMs whose labels match its
 * selector, a `host.*` rule the hosts (not offline) whose labels match; a
 * firing alert whose subject left that set resolves (value null).
 *
 * Notifications: firing and resolving are Raft commands, so a new leader
 * knows what fires and notifies nothing again; a leader that dies between
 * the commit and the POST loses that one notification (at most once). The
 * POSTs of one alert are sent in order (its `resolved` after its `firing`),
 * and at most {@link MAX_QUEUED_DELIVERIES} wait at once (more are dropped,
 * counted as failed).
 *
 * @module
 */
import type { Command, VmRecord } from "../fsm/mod.ts";
import type {
  AlertChange,
  AlertReads,
  AlertRecord,
  AlertRuleRecord,
  AlertScope,
} from "../fsm/alerts.ts";
import { scopeOf } from "../fsm/alerts.ts";
import type { NodeRecord } from "../fsm/nodes.ts";
import type { HostSample, VmSample } from "../../host/metrics/samples.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";
import {
  type AlertAction,
  AlertEvaluator,
  type Observed,
  type RuleInput,
} from "./alert_evaluator.ts";
import { type AlertNotification, DEFAULT_RETRY, deliver, type RetryPolicy } from "./webhook.ts";

/** The path of a host's newest samples, for the leader (api/routes/internal.ts). */
export const LATEST_SAMPLES_PATH = "/internal/metrics/latest";
/** Deliveries waiting or being retried at once. */
export const MAX_QUEUED_DELIVERIES = 1_000;
/** How long the leader waits for a host's samples. */
const PULL_TIMEOUT_MS = 2_000;

/** A sample with its time (epoch ms), as the sampler keeps it. */
export interface Stamped<T> {
  t: number;
  sample: T;
}

/** What a host answers on {@link LATEST_SAMPLES_PATH}. */
export interface LatestSamples {
  host: Stamped<HostSample> | null;
  vms: Record<string, Stamped<VmSample>>;
}

/** The sampler's reads {@link latestSamplesOf} needs (host/metrics/sampler.ts). */
export interface LatestReads {
  latestHost(): Stamped<HostSample> | null;
  latestVm(name: string): Stamped<VmSample> | null;
  vmNames(): string[];
}

/** A host's newest samples (none on a host that samples nothing, e.g. a simulated one). */
export function latestSamplesOf(stats: LatestReads | undefined): LatestSamples {
  const vms: Record<string, Stamped<VmSample>> = {};
  for (const name of stats?.vmNames() ?? []) {
    const s = stats!.latestVm(name);
    if (s) vms[name] = s;
  }
  return { host: stats?.latestHost() ?? null, vms };
}

/** How a metric is read from a VM's or a host's sample. */
const VM_FIELDS: Record<string, (s: VmSample) => number> = {
  "vm.cpu": (s) => s.cpuPercent,
  "vm.memory": (s) => s.memoryBytes,
  "vm.disk.read": (s) => s.diskReadBytesPerSec,
  "vm.disk.write": (s) => s.diskWriteBytesPerSec,
  "vm.disk.read_ops": (s) => s.diskReadOpsPerSec,
  "vm.disk.write_ops": (s) => s.diskWriteOpsPerSec,
  "vm.net.rx": (s) => s.netRxBytesPerSec,
  "vm.net.tx": (s) => s.netTxBytesPerSec,
};
const pct = (used: number, total: number) => total > 0 ? (used / total) * 100 : 0;
const HOST_FIELDS: Record<string, (s: HostSample) => number> = {
  "host.cpu": (s) => s.cpuPercent,
  "host.memory": (s) => pct(s.memoryUsedBytes, s.memoryTotalBytes),
  "host.memory.bytes": (s) => s.memoryUsedBytes,
  "host.disk": (s) => pct(s.diskUsedBytes, s.diskTotalBytes),
  "host.load": (s) => s.load1,
  "host.vms": (s) => s.vms,
};

/** The value of cluster metric `metric` (`cluster.vms.failed`, `cluster.nodes.offline`, ...). */
export function clusterValue(
  metric: string,
  vmCounts: Partial<Record<string, number>>,
  nodes: readonly Pick<NodeRecord, "state">[],
): number {
  const [, what, state] = metric.split(".");
  if (what === "vms") {
    return state === undefined
      ? Object.values(vmCounts).reduce((a: number, b) => a + (b ?? 0), 0)
      : vmCounts[state] ?? 0;
  }
  return nodes.filter((n) => n.state === state).length;
}

/** Whether `labels` has every label of `selector`. */
export function matches(labels: Record<string, string>, selector: Record<string, string>) {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** The narrow view of a node the evaluator needs. */
export interface AlertNode {
  readonly id: string;
  isLeader(): boolean;
  propose(cmd: Command): Promise<unknown>;
  fsm: {
    alerts: AlertReads;
    vms(): VmRecord[];
    nodes(): NodeRecord[];
    vmCountsByState(): Partial<Record<string, number>>;
  };
}

/** Reads a host's newest samples (null: unreachable or none). */
export type SamplesSource = (host: string) => Promise<LatestSamples | null>;

/** Options of the {@link AlertManager}. */
export interface AlertManagerOptions {
  intervalMs: number;
  samples: SamplesSource;
  now?: () => number;
  retry?: RetryPolicy;
}

/** Evaluates the rules every interval while this node leads; notifies webhooks. */
export class AlertManager {
  readonly #node: AlertNode;
  readonly #opts: AlertManagerOptions;
  #evaluator = new AlertEvaluator();
  #timer: ReturnType<typeof setInterval> | null = null;
  #busy = false;
  #wasLeader = false;
  readonly #chains = new Map<string, Promise<void>>();
  #queued = 0;
  readonly #stopping = new AbortController();

  constructor(node: AlertNode, opts: AlertManagerOptions) {
    this.#node = node;
    this.#opts = opts;
  }

  /** Evaluates every `intervalMs` from now on (on a follower each tick does nothing). */
  start(): void {
    this.#timer = setInterval(() => void this.tick(), this.#opts.intervalMs);
  }

  /** Stops evaluating and abandons retries (deliveries in flight end at their next wait). */
  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#stopping.abort();
  }

  /** Deliveries queued or in flight settle (tests). */
  async idle(): Promise<void> {
    while (this.#chains.size) await Promise.all([...this.#chains.values()]);
  }

  /** One evaluation (also called by tests). */
  async tick(): Promise<void> {
    const leading = this.#node.isLeader();
    // A new term of leadership starts with no pending windows (see alert_evaluator.ts).
    if (leading && !this.#wasLeader) this.#evaluator = new AlertEvaluator();
    this.#wasLeader = leading;
    if (!leading || this.#busy) return;
    this.#busy = true;
    const t0 = performance.now();
    try {
      const rules = this.#node.fsm.alerts.rules().filter((r) => r.enabled);
      if (!rules.length) return;
      const inputs = await this.#inputs(rules);
      const now = (this.#opts.now ?? Date.now)();
      const actions = this.#evaluator.step(now, inputs, this.#node.fsm.alerts.firing());
      for (const a of actions) {
        if (!this.#node.isLeader()) break;
        await this.#apply(a, now).catch((err) =>
          log.warn("alert not proposed", { rule: a.rule, subject: a.subject, error: String(err) })
        );
      }
    } finally {
      this.#busy = false;
      metrics.alertEvaluationSeconds.observe((performance.now() - t0) / 1000);
    }
  }

  async #inputs(rules: AlertRuleRecord[]): Promise<RuleInput[]> {
    const scopes = new Set<AlertScope>(rules.map((r) => scopeOf(r.metric)));
    const nodes = this.#node.fsm.nodes();
    const vms = scopes.has("vm") ? this.#node.fsm.vms().filter((v) => v.state === "running") : [];
    // The hosts to ask: those of running VMs for vm.* rules, every live host for host.* rules.
    const hosts = new Set<string>();
    for (const v of vms) if (v.node) hosts.add(v.node);
    if (scopes.has("host")) { for (const n of nodes) if (n.state !== "offline") hosts.add(n.name); }
    const samples = new Map<string, LatestSamples | null>();
    await Promise.all(
      [...hosts].map(async (h) => samples.set(h, await this.#opts.samples(h).catch(() => null))),
    );
    const now = (this.#opts.now ?? Date.now)();
    const fresh = <T>(s: Stamped<T> | null | undefined): T | null =>
      s && now - s.t <= 3 * this.#opts.intervalMs + PULL_TIMEOUT_MS ? s.sample : null;
    const counts = scopes.has("cluster") ? this.#node.fsm.vmCountsByState() : {};
    return rules.map((rule) => {
      let observed: Observed[] = [];
      const scope = scopeOf(rule.metric);
      if (scope === "cluster") {
        observed = [{ subject: "cluster", value: clusterValue(rule.metric, counts, nodes) }];
      } else if (scope === "vm") {
        const read = VM_FIELDS[rule.metric];
        observed = vms.filter((v) => matches(v.labels ?? {}, rule.labels)).map((v) => {
          const s = fresh(samples.get(v.node ?? "")?.vms[v.name]);
          return { subject: v.name, value: s ? read(s) : null };
        });
      } else {
        const read = HOST_FIELDS[rule.metric];
        observed = nodes.filter((n) => n.state !== "offline" && matches(n.labels, rule.labels))
          .map((n) => {
            const s = fresh(samples.get(n.name)?.host);
            return { subject: n.name, value: s ? read(s) : null };
          });
      }
      return { rule, observed };
    });
  }

  async #apply(a: AlertAction, now: number): Promise<void> {
    const cmd: Command = a.kind === "fire"
      ? {
        op: "alert.fire",
        rule: a.rule,
        subject: a.subject,
        value: a.value,
        since: a.since,
        at: now,
      }
      : { op: "alert.resolve", rule: a.rule, subject: a.subject, value: a.value, at: now };
    const { alert, changed } = await this.#node.propose(cmd) as AlertChange;
    if (!changed || !alert) return;
    metrics.alertTransitions.inc({ state: alert.state });
    log.info(alert.state === "firing" ? "alert firing" : "alert resolved", {
      rule: alert.rule,
      subject: alert.subject,
      value: a.value,
      threshold: alert.threshold,
    });
    const rule = this.#node.fsm.alerts.rule(alert.rule);
    if (rule?.webhook) this.#notify(rule, alert);
  }

  #notify(rule: AlertRuleRecord, alert: AlertRecord): void {
    const url = rule.webhook!;
    if (this.#queued >= MAX_QUEUED_DELIVERIES) {
      metrics.alertWebhookDeliveries.inc({ result: "failed" });
      log.warn("alert webhook dropped: too many waiting", { rule: rule.name });
      return;
    }
    const body = notificationOf(rule, alert, this.#node.id);
    const key = `${alert.rule}\u0000${alert.subject}`;
    this.#queued++;
    const prev = this.#chains.get(key) ?? Promise.resolve();
    const next = prev.then(async () => {
      await deliver(url, body, this.#opts.retry ?? DEFAULT_RETRY, {
        signal: this.#stopping.signal,
      });
    }).finally(() => {
      this.#queued--;
      if (this.#chains.get(key) === next) this.#chains.delete(key);
    });
    this.#chains.set(key, next);
  }
}

/** The webhook body of `alert` (of `rule`) as the leader `node` sends it. */
export function notificationOf(
  rule: AlertRuleRecord,
  alert: AlertRecord,
  node: string,
): AlertNotification {
  const iso = (t: number) => new Date(t).toISOString();
  return {
    rule: alert.rule,
    metric: alert.metric,
    subject: alert.subject,
    state: alert.state,
    value: alert.state === "firing" ? alert.value : alert.resolvedValue,
    comparison: alert.comparison,
    threshold: alert.threshold,
    forSeconds: rule.forMs / 1000,
    since: iso(alert.since),
    firedAt: iso(alert.firedAt),
    resolvedAt: alert.resolvedAt === null ? null : iso(alert.resolvedAt),
    node,
  };
}

/**
 * The samples source of a node: its own sampler for itself, a signed peer GET of
 * {@link LATEST_SAMPLES_PATH} for any other member.
 */
export function samplesSource(
  self: string,
  local: (() => LatestSamples) | null,
  peer: (
    host: string,
  ) => { url: string; fetch: (url: string, init?: RequestInit) => Promise<Response> } | null,
): SamplesSource {
  return async (host) => {
    if (host === self) return local?.() ?? null;
    const p = peer(host);
    if (!p) return null;
    const res = await p.fetch(p.url + LATEST_SAMPLES_PATH, {
      signal: AbortSignal.timeout(PULL_TIMEOUT_MS),
    });
    if (!res.ok) {
      await res.body?.cancel();
      return null;
    }
    return await res.json() as LatestSamples;
  };
}
