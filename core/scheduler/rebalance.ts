/**
 * The load balancer's planner (greedy, as Ganeti's hbal): repeatedly take the
 * single VM move that most reduces the spread of host memory load (the
 * standard deviation of used/capacity over schedulable hosts), honouring
 * every placement rule through the PlacementIndex, until no move improves it
 * enough or the move budget is spent. Pure: state in, plan out.
 */
import type { HostView, PlacedVm, PlacementRequest, SchedulerConfig } from "./types.ts";
import { PlacementIndex } from "./placement_index.ts";

export interface Move {
  vm: string;
  from: string;
  to: string;
}

export interface RebalancePlan {
  moves: Move[];
  /** Standard deviation of memory load fractions before and after the plan. */
  spreadBefore: number;
  spreadAfter: number;
  /** Max minus min memory load fraction before and after. */
  imbalanceBefore: number;
  imbalanceAfter: number;
}

export interface RebalanceOptions {
  /** Stop when max-min load fraction is at most this. */
  threshold: number;
  maxMoves: number;
  /** VMs that must not move (cooldown, migrating, pinned). */
  frozen?: ReadonlySet<string>;
  /** How to ask the scheduler about one VM (groups, constraints). */
  requestOf: (vm: PlacedVm) => PlacementRequest;
}

const MIN_GAIN = 1e-4;

function loads(index: PlacementIndex, hosts: string[]): number[] {
  return hosts.map((h) => {
    const u = index.usage(h)!;
    return u.capacity.memoryMiB > 0 ? u.used.memoryMiB / u.capacity.memoryMiB : 0;
  });
}

function stddev(xs: number[]): number {
  if (!xs.length) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / xs.length);
}

function imbalance(xs: number[]): number {
  return xs.length ? Math.max(...xs) - Math.min(...xs) : 0;
}

export function planRebalance(
  hostViews: readonly HostView[],
  vms: readonly PlacedVm[],
  config: SchedulerConfig,
  opts: RebalanceOptions,
): RebalancePlan {
  const hosts = hostViews.filter((h) => (h.schedulable ?? true) && h.state === "ready")
    .map((h) => h.node.name);
  const index = new PlacementIndex(hostViews, vms, config);
  const placedOn = new Map(vms.filter((v) => v.node).map((v) => [v.name, v.node!]));
  const movable = vms.filter((v) =>
    v.node && hosts.includes(v.node) && v.desired === "running" && !v.template &&
    !opts.frozen?.has(v.name)
  );
  const before = loads(index, hosts);
  const moves: Move[] = [];
  let current = stddev(before);
  while (moves.length < opts.maxMoves && imbalance(loads(index, hosts)) > opts.threshold) {
    let best: { vm: PlacedVm; to: string; spread: number } | null = null;
    for (const vm of movable) {
      const from = placedOn.get(vm.name)!;
      for (const to of hosts) {
        if (to === from) continue;
        const req = { ...opts.requestOf(vm), node: to };
        if (!index.place(req).ok) continue;
        index.commit(vm.name, to, req);
        const spread = stddev(loads(index, hosts));
        index.commit(vm.name, from, { ...req, node: from });
        if (!best || spread < best.spread) best = { vm, to, spread };
      }
    }
    if (!best || current - best.spread < MIN_GAIN) break;
    const from = placedOn.get(best.vm.name)!;
    index.commit(best.vm.name, best.to, { ...opts.requestOf(best.vm), node: best.to });
    placedOn.set(best.vm.name, best.to);
    const earlier = moves.findIndex((m) => m.vm === best!.vm.name);
    if (earlier >= 0) moves[earlier].to = best.to; // one migration per VM, to its final host
    else moves.push({ vm: best.vm.name, from, to: best.to });
    current = best.spread;
  }
  const after = loads(index, hosts);
  return {
    moves: moves.filter((m) => m.from !== m.to),
    spreadBefore: round(stddev(before)),
    spreadAfter: round(stddev(after)),
    imbalanceBefore: round(imbalance(before)),
    imbalanceAfter: round(imbalance(after)),
  };
}

function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}
