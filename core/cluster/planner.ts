/**
 * Optimistic, batched placement of new VMs on the leader — Nomad's plan
 * applier, in small.
 *
 * Creates no longer wait for each other's commit. Each one is decided at once
 * against a placement index of the applied state plus every decision already
 * proposed but not yet applied (its reservation); the decisions made in one
 * turn of the event loop travel together in one `plan.apply` entry. When the
 * entry is applied, the state machine checks each VM again on its chosen host
 * (core/fsm/placement_check.ts) and refuses only the ones that no longer fit;
 * those are decided again here (at most {@link MAX_ATTEMPTS} times in all), the
 * others are answered.
 *
 * Safety does not rest on this file: the check at apply time is deterministic
 * on every replica, so no interleaving of leaders, terms or code paths can
 * over-commit a host or break a strict group. What this file buys is speed:
 * one Raft round for many creates, and no round at all between deciding one
 * VM and the next.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { ClusterNode } from "./node.ts";
import type {
  OperationBrief,
  PlannedCreate,
  PlannedCreateResult,
  TrackAs,
  VmRecord,
  VmSpec,
} from "../fsm/mod.ts";
import { ConflictError, NovaError } from "../errors/mod.ts";
import {
  explain,
  type HostUsage,
  type HostView,
  type PlacedVm,
  type PlacementGroup,
  PlacementIndex,
  type PlacementRequest,
  type PoolRule,
  type Strategy,
} from "../scheduler/mod.ts";
import { placementRequestOfSpec } from "../fsm/placement_check.ts";
import { log } from "../log/mod.ts";
import { metrics } from "../metrics/mod.ts";

/** Creates decided into one entry at most (bounds the entry: a VM spec is ~1 KB). */
export const MAX_BATCH = 512;
/** Decisions per VM in all, when the state machine refused earlier ones as no longer fitting. */
export const MAX_ATTEMPTS = 3;

/** Changes that alter hosts, capacity rules or groups (a VM without a name: many VMs). */
const REBUILD_ON = new Set(["cluster", "member", "node", "config", "group", "vm"]);

interface Pending {
  vm: VmSpec;
  req: PlacementRequest;
  by: string;
  track?: TrackAs;
  attempts: number;
  resolve(vm: VmRecord & { operation?: OperationBrief }): void;
  reject(err: Error): void;
}

/** A decision proposed and not yet answered: what it holds. */
interface Reservation {
  node: string;
  req: PlacementRequest;
  vm: VmSpec;
}

export class Planner {
  readonly #node: ClusterNode;
  readonly #hostViews: () => HostView[];
  #index: PlacementIndex | null = null;
  #hostsKey = "";
  /** VMs changed in the applied state since the index looked at them. */
  readonly #stale = new Set<string>();
  readonly #reserved = new Map<string, Reservation>();
  #queue: Pending[] = [];
  #flushScheduled = false;
  /** Entries proposed and not yet answered (for metrics and tests). */
  #plansInFlight = 0;
  /** Decisions the state machine refused as no longer fitting (each decided again or answered). */
  #refusedAtApply = 0;

  constructor(node: ClusterNode, hostViews: () => HostView[]) {
    this.#node = node;
    this.#hostViews = hostViews;
    node.fsm.onChange((c) => {
      if (c === null) this.#index = null;
      else if (c.resource === "vm" && c.name !== undefined) this.#stale.add(c.name);
      else if (REBUILD_ON.has(c.resource)) this.#index = null;
    });
  }

  /**
   * Places `vm` (its `node` is ignored; `choice.node` pins a host) and creates it.
   * Resolves with the created record (with its operation when `track` asked for one);
   * rejects with a ConflictError that explains every host's reason when none can take it.
   */
  create(
    vm: VmSpec,
    choice: {
      node?: string;
      strategy?: Strategy;
      group?: PlacementGroup;
      pools?: readonly PoolRule[];
    },
    by: string,
    track?: TrackAs,
  ): Promise<VmRecord & { operation?: OperationBrief }> {
    const req = {
      ...placementRequestOfSpec(vm, choice.group, choice.pools),
      node: choice.node,
      strategy: choice.strategy,
    };
    return new Promise((resolve, reject) => {
      this.#enqueue({ vm, req, by, ...(track ? { track } : {}), attempts: 0, resolve, reject });
    });
  }

  /** VMs decided and proposed but not yet applied, as the scheduler sees placed VMs. */
  reservations(): PlacedVm[] {
    return [...this.#reserved.values()].map((r) => ({ ...r.vm, node: r.node }));
  }

  /** What `node` holds as this planner sees it (applied state plus reservations). */
  usage(node: string): HostUsage | undefined {
    return this.#currentIndex().usage(node);
  }

  /** Entries proposed and not yet answered. */
  get plansInFlight(): number {
    return this.#plansInFlight;
  }

  /**
   * Decisions the state machine refused as no longer fitting. Alone on its leader, with
   * its reservations, the planner should never see one: each is a decision made on a
   * view that missed something (another leader's, or a bug here).
   */
  get refusedAtApply(): number {
    return this.#refusedAtApply;
  }

  #enqueue(p: Pending): void {
    this.#queue.push(p);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Decides every waiting create (up to {@link MAX_BATCH}) and proposes them as one entry. */
  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#queue.splice(0, MAX_BATCH);
    if (this.#queue.length) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
    let index: PlacementIndex;
    try {
      index = this.#currentIndex();
    } catch (err) {
      for (const p of batch) p.reject(err as Error);
      return;
    }
    const planned: Pending[] = [];
    const creates: PlannedCreate[] = [];
    for (const p of batch) {
      const chosen = this.#decide(index, p);
      if (!chosen) continue;
      planned.push(p);
      creates.push({
        vm: { ...p.vm, node: chosen },
        by: p.by,
        ...(p.track ? { track: p.track } : {}),
      });
    }
    if (!creates.length) return;
    metrics.planEntries.observe(creates.length);
    this.#plansInFlight++;
    this.#node.propose({ op: "plan.apply", creates, at: Date.now() }).then(
      (value) => this.#answer(planned, (value as { results: PlannedCreateResult[] }).results),
      (err) => this.#fail(planned, err as Error),
    ).finally(() => this.#plansInFlight--);
  }

  /** The host for `p`, reserved in `index`; null when it was answered here (refused). */
  #decide(index: PlacementIndex, p: Pending): string | null {
    const name = p.vm.name;
    if (this.#reserved.has(name) || this.#node.fsm.vm(name)) {
      p.reject(new ConflictError(`VM "${name}" already exists`));
      return null;
    }
    const placed = index.place(p.req);
    if (!placed.ok) {
      metrics.placements.inc({ outcome: "no_host" });
      p.reject(noHostError(this.#node, name, placed.reasons));
      return null;
    }
    index.commit(name, placed.node, p.req);
    this.#reserved.set(name, { node: placed.node, req: p.req, vm: p.vm });
    return placed.node;
  }

  #answer(planned: Pending[], results: PlannedCreateResult[]): void {
    planned.forEach((p, i) => {
      this.#release(p.vm.name);
      const r = results[i];
      if (r?.ok) {
        metrics.placements.inc({ outcome: "created" });
        return p.resolve(r.operation ? { ...r.vm, operation: r.operation } : r.vm);
      }
      if (r?.stale) {
        this.#refusedAtApply++;
        metrics.placements.inc({ outcome: "refused_at_apply" });
      }
      if (r && r.stale && p.attempts + 1 < MAX_ATTEMPTS) {
        log.debug("placement no longer fits; deciding again", { vm: p.vm.name, why: r.error });
        return this.#enqueue({ ...p, attempts: p.attempts + 1 });
      }
      p.reject(
        r
          ? new NovaError(r.error.code, r.error.message, r.error.details)
          : new NovaError("internal", `plan.apply answered no result for ${p.vm.name}`),
      );
    });
  }

  #fail(planned: Pending[], err: Error): void {
    for (const p of planned) {
      this.#release(p.vm.name);
      p.reject(err);
    }
  }

  /** The reservation ends: the index reads the VM from the applied state again. */
  #release(name: string): void {
    this.#reserved.delete(name);
    this.#stale.add(name);
  }

  /**
   * The index of the applied state plus the reservations. Rebuilt (O(hosts + VMs))
   * when hosts, groups or settings changed or a host's liveness did; otherwise
   * only the VMs that changed are read again.
   */
  #currentIndex(): PlacementIndex {
    const hosts = this.#hostViews();
    const key = hosts.map((h) => `${h.node.name}:${h.state}:${h.schedulable}`).join(",");
    if (!this.#index || key !== this.#hostsKey) {
      const fsm = this.#node.fsm;
      this.#index = new PlacementIndex(hosts, fsm.vms(), fsm.config().config);
      this.#hostsKey = key;
      this.#stale.clear();
      for (const [name, r] of this.#reserved) this.#index.commit(name, r.node, r.req);
      return this.#index;
    }
    for (const name of this.#stale) {
      if (this.#reserved.has(name)) continue; // still held as decided
      this.#index.refresh(name, this.#node.fsm.vm(name));
    }
    this.#stale.clear();
    return this.#index;
  }
}

/** Members whose host has not registered its inventory yet (e.g. still starting up). */
export function unregisteredMembers(node: ClusterNode): string[] {
  const hosts = new Set(node.fsm.nodes().map((n) => n.name));
  return node.fsm.members().map((m) => m.name).filter((m) => !hosts.has(m));
}

/** The 409 for a VM no host can take, naming every host's reason (and hosts not registered yet). */
export function noHostError(
  node: ClusterNode,
  name: string | undefined,
  reasons: Record<string, string>,
): ConflictError {
  const unregistered = unregisteredMembers(node);
  return new ConflictError(`no host can run ${name}: ${explain(reasons, unregistered)}`, {
    reasons,
    unregistered,
  });
}
