/**
 * Which events one applied Raft entry produces: a pure function of the entry's
 * command, what it returned, and what the state held for its target just
 * before ({@link Before}). Every replica applies the same entries to the same
 * state, so every replica derives the same events, in the same order, with the
 * same ids (`<raftIndex>-<n>`, see log.ts).
 *
 * What becomes an event (and what does not):
 * - `vm`: created, desired state asked (start/stop/delete), changed (resize, NICs, disks,
 *   snapshots), its observed state changing (a host's report that repeats the state, or only
 *   updates guest info, is not an event), migrated, moved (HA failover, evacuation), deleted.
 * - `operation`: created, progress (each `operation.update` carrying progress), finished.
 * - `node`: joined (first registration), labels or address changed, state changed (ready,
 *   cordoned, draining, drained, offline), removed, Raft membership (learner, voter), and
 *   fenced (a host giving up its lease, from the host's own audit record).
 * - `ha`: actions the cluster took on its own (`ha.restart`, `fencing.kill`,
 *   `evacuate.move`, `drain.move`, `rebalance.move`), from their audit records.
 * - `audit`: every other audit record (mutating API requests, backup schedules, recovery).
 * - `alert`: an alert fired or resolved (`alert.fired`, `alert.resolved`; resource
 *   `RULE/SUBJECT`, target the subject). A repeated fire or resolve changes nothing and is none.
 *
 * Rejected commands change nothing and produce no event. Inventory refreshes,
 * images, networks and other resources are not events of their own; their
 * requests still appear as `audit` events.
 */
import type { ConfChange } from "../raft/types.ts";
import type { Command, OperationRecord, PlannedCreateResult, VmRecord } from "../fsm/commands.ts";
import type { AuditInput } from "../fsm/audit.ts";
import type { NodeRecord } from "../fsm/nodes.ts";
import type { AlertChange } from "../fsm/alerts.ts";

/** The kinds of event, as `?type=` filters them. */
export const EVENT_TYPES = ["vm", "operation", "node", "ha", "audit", "alert"] as const;
/** One of {@link EVENT_TYPES}. */
export type EventType = (typeof EVENT_TYPES)[number];

/** Whether `s` names an event type. */
export function isEventType(s: string): s is EventType {
  return (EVENT_TYPES as readonly string[]).includes(s);
}

/** An event before it has its id (the entry's index and its position in the entry). */
export interface EventDraft {
  type: EventType;
  /** What happened: `vm.state`, `operation.progress`, `node.joined`, `ha.restart`, ... */
  action: string;
  /** The kind of thing it is about: `vm`, `operation`, `node`, or an audit record's kind. */
  kind: string;
  /** Its name (a VM's or node's name, an operation's id); "" when none. */
  resource: string;
  /** What an operation acts on (a VM or node name), so `?resource=web1` finds its migrations. */
  target: string | null;
  /** When, by the proposer's clock (epoch ms, carried in the command); null when unknown. */
  at: number | null;
  /** What changed: small, JSON. */
  details: Record<string, unknown>;
}

/** What the state held, just before the entry applied, for the thing it touches. */
export interface Before {
  vm?: Pick<VmRecord, "state" | "node" | "desired"> | null;
  node?: Pick<NodeRecord, "state" | "url" | "labels"> | null;
  operation?: Pick<OperationRecord, "state"> | null;
}

/** The reads {@link beforeOf} needs (the state machine's, inside the apply transaction). */
export interface BeforeReads {
  vm(name: string): VmRecord | null;
  node(name: string): NodeRecord | null;
  operation(id: string): OperationRecord | null;
}

/** Reads what {@link eventsOf} compares against, for the commands that need it. */
export function beforeOf(cmd: Command, r: BeforeReads): Before {
  switch (cmd.op) {
    case "vm.observed": {
      const vm = r.vm(cmd.name);
      return { vm: vm && { state: vm.state, node: vm.node, desired: vm.desired } };
    }
    case "node.upsert":
    case "node.state": {
      const n = r.node(cmd.name);
      return { node: n && { state: n.state, url: n.url, labels: n.labels } };
    }
    case "operation.update": {
      const op = r.operation(cmd.id);
      return { operation: op && { state: op.state } };
    }
    default:
      return {};
  }
}

const vmEvent = (
  action: string,
  name: string,
  at: number,
  details: Record<string, unknown> = {},
): EventDraft => ({
  type: "vm",
  action,
  kind: "vm",
  resource: name,
  target: null,
  at,
  details,
});

const nodeEvent = (
  action: string,
  name: string,
  at: number | null,
  details: Record<string, unknown> = {},
): EventDraft => ({
  type: "node",
  action,
  kind: "node",
  resource: name,
  target: null,
  at,
  details,
});

/** A VM record's fields that events carry. */
function vmSummary(vm: VmRecord): Record<string, unknown> {
  return { node: vm.node, state: vm.state, desired: vm.desired };
}

/**
 * The events of one applied command (`value` is what its applier returned).
 * @param before what {@link beforeOf} read before the applier ran
 */
export function eventsOf(cmd: Command, value: unknown, before: Before): EventDraft[] {
  switch (cmd.op) {
    case "vm.create": {
      const vm = value as VmRecord;
      return [vmEvent("vm.created", vm.name, cmd.at, { ...vmSummary(vm), by: cmd.by })];
    }
    case "plan.apply": {
      const { results } = value as { results: PlannedCreateResult[] };
      return results.flatMap((r, i) =>
        r.ok
          ? [vmEvent("vm.created", r.vm.name, cmd.at, {
            ...vmSummary(r.vm),
            by: cmd.creates[i]?.by ?? null,
          })]
          : []
      );
    }
    case "vm.desired": {
      const v = value as (VmRecord & { deleted?: undefined }) | { name: string; deleted: true };
      if (v.deleted) return [vmEvent("vm.deleted", cmd.name, cmd.at, { by: cmd.by })];
      return [
        vmEvent("vm.desired", cmd.name, cmd.at, {
          ...vmSummary(v as VmRecord),
          force: !!cmd.force,
          by: cmd.by,
        }),
      ];
    }
    case "vm.update":
      return [
        vmEvent("vm.updated", cmd.name, cmd.at, {
          changes: Object.keys(cmd.changes).sort(),
          by: cmd.by,
        }),
      ];
    case "vm.nic.add":
    case "vm.nic.remove":
    case "vm.disk.attach":
    case "vm.disk.detach":
      return [vmEvent("vm.updated", cmd.name, cmd.at, { change: cmd.op, by: cmd.by })];
    case "vm.snapshot.add":
      return [vmEvent("vm.snapshot.created", cmd.name, cmd.at, { snapshot: cmd.snapshot.name })];
    case "vm.snapshot.remove":
      return [vmEvent("vm.snapshot.deleted", cmd.name, cmd.at, { snapshot: cmd.snapshot })];
    case "vm.observed": {
      const vm = value as VmRecord | null;
      const was = before.vm;
      if (!vm || (was && was.state === vm.state && was.node === vm.node)) return [];
      return [
        vmEvent("vm.state", cmd.name, cmd.at, {
          state: vm.state,
          from: was?.state ?? null,
          node: vm.node,
          reason: vm.reason,
        }),
      ];
    }
    case "vm.migrated": {
      if (!value) return [];
      return [
        vmEvent("vm.migrated", cmd.name, cmd.at, {
          from: cmd.from,
          to: cmd.to,
          operation: cmd.opId,
          state: (value as VmRecord).state,
        }),
      ];
    }
    case "vm.moved": {
      if (!value) return [];
      return [
        vmEvent("vm.moved", cmd.name, cmd.at, {
          from: cmd.from,
          to: cmd.to,
          reason: cmd.reason,
          state: (value as VmRecord).state,
        }),
      ];
    }
    case "vm.remove":
      return value ? [vmEvent("vm.deleted", cmd.name, cmd.at, { node: cmd.node })] : [];
    case "operation.create": {
      const op = cmd.operation;
      return [{
        type: "operation",
        action: "operation.created",
        kind: "operation",
        resource: op.id,
        target: op.target,
        at: cmd.at,
        details: { kind: op.kind, target: op.target, runner: op.runner, by: op.by },
      }];
    }
    case "operation.update": {
      if (before.operation?.state !== "running") return []; // finished ones never change
      const op = value as OperationRecord;
      const finished = op.state !== "running";
      if (!finished && cmd.progress === undefined) return [];
      return [{
        type: "operation",
        action: finished ? "operation.finished" : "operation.progress",
        kind: "operation",
        resource: op.id,
        target: op.target,
        at: cmd.at,
        details: finished
          ? { kind: op.kind, state: op.state, error: op.error, result: op.result }
          : { kind: op.kind, state: op.state, progress: op.progress },
      }];
    }
    case "node.upsert": {
      const was = before.node;
      if (!was) return [nodeEvent("node.joined", cmd.name, cmd.at, { url: cmd.url })];
      if (was.url === cmd.url && sameLabels(was.labels, cmd.labels)) return [];
      return [nodeEvent("node.updated", cmd.name, cmd.at, { url: cmd.url, labels: cmd.labels })];
    }
    case "node.state": {
      const was = before.node;
      if (!was || was.state === cmd.state) return [];
      return [nodeEvent("node.state", cmd.name, cmd.at, { state: cmd.state, from: was.state })];
    }
    case "node.remove":
      return [nodeEvent("node.removed", cmd.name, cmd.at)];
    case "audit.append":
      return cmd.records.map(auditEvent);
    case "alert.fire":
    case "alert.resolve": {
      const { alert, changed } = value as AlertChange;
      if (!changed || !alert) return [];
      return [{
        type: "alert",
        action: cmd.op === "alert.fire" ? "alert.fired" : "alert.resolved",
        kind: "alert",
        resource: `${alert.rule}/${alert.subject}`,
        target: alert.subject,
        at: cmd.at,
        details: {
          rule: alert.rule,
          metric: alert.metric,
          subject: alert.subject,
          value: cmd.op === "alert.fire" ? alert.value : alert.resolvedValue,
          comparison: alert.comparison,
          threshold: alert.threshold,
        },
      }];
    }
    default:
      return [];
  }
}

/** The event of a Raft membership change (learner added, promoted, demoted, removed). */
export function confEvents(cc: ConfChange): EventDraft[] {
  let at: number | null = null;
  try {
    const ctx = cc.context ? JSON.parse(cc.context) as { at?: unknown } : {};
    if (typeof ctx.at === "number") at = ctx.at;
  } catch {
    // An unreadable context: the applier refused it already, or it carries no time.
  }
  const role = cc.type === "addLearner" || cc.type === "demote"
    ? "learner"
    : cc.type === "promote"
    ? "voter"
    : null;
  return [nodeEvent("node.member", cc.node, at, { change: cc.type, role })];
}

/** System actions that are HA's: the cluster moving, restarting or killing VMs on its own. */
const HA_ACTIONS = /^(ha|fencing|evacuate|drain|rebalance)\./;

/** One audit record as an event: `ha` or `node.fenced` for the cluster's own actions. */
function auditEvent(r: AuditInput): EventDraft {
  const slash = r.resource?.indexOf("/") ?? -1;
  const kind = r.resource && slash > 0 ? r.resource.slice(0, slash) : (r.resource ?? "");
  const name = r.resource && slash > 0 ? r.resource.slice(slash + 1) : "";
  if (r.method === "SYSTEM" && r.route === "fencing.giveUpLease" && kind === "node") {
    return nodeEvent("node.fenced", name, r.at, { detail: r.detail ?? null, by: r.principal });
  }
  if (r.method === "SYSTEM" && HA_ACTIONS.test(r.route)) {
    return {
      type: "ha",
      action: r.route,
      kind,
      resource: name,
      target: null,
      at: r.at,
      details: { node: r.node, detail: r.detail ?? null, by: r.principal },
    };
  }
  return {
    type: "audit",
    action: r.method === "SYSTEM" ? r.route : "request",
    kind,
    resource: name,
    target: null,
    at: r.at,
    details: {
      principal: r.principal,
      role: r.role,
      source: r.source,
      node: r.node,
      requestId: r.requestId,
      method: r.method,
      route: r.route,
      path: r.path,
      code: r.code,
      ms: r.ms,
      detail: r.detail ?? null,
    },
  };
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length &&
    ka.every((k) => Object.hasOwn(b, k) && a[k] === b[k]);
}
