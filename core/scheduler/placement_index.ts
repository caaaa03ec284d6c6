/**
 * The placement index: per-host capacity, usage and group membership computed
 * once from cluster state, O(hosts + VMs), so that each decision costs
 * O(hosts). The leader keeps one per applied state and commits its own
 * decisions into it, so a batch (a rebalancer plan, concurrent creates) sees
 * the effect of the decisions before it without a rebuild.
 */
import {
  brokenConstraint,
  cpuFits,
  cpuReason,
  diskFits,
  diskReason,
  GiB,
  groupAllows,
  groupReason,
  inventoryRejection,
  labelReason,
  memoryFits,
  memoryReason,
  stateRejection,
} from "./filters.ts";
import { GroupMembership, type GroupPlacement } from "./groups.ts";
import { groupScore, outranks, strategyScore } from "./scorers.ts";
import { lazyField, Verdict, Verdicts } from "./verdicts.ts";
import type {
  HostView,
  PlacedVm,
  PlacementGroup,
  PlacementRequest,
  PlacementResult,
  PlacementSuccess,
  PoolRule,
  SchedulerConfig,
  Strategy,
} from "./types.ts";

/** What a placed VM holds on its host, kept so a later commit can move or free it. */
interface Holding {
  host: number;
  cpus: number;
  memoryMiB: number;
  diskBytes: number;
  group?: string;
}

/** Capacity and usage of one host, after overcommit. */
export interface HostUsage {
  capacity: { cpus: number; memoryMiB: number; diskBytes: number };
  used: { cpus: number; memoryMiB: number; diskBytes: number };
  vms: number;
}

/** Everything about one request that does not depend on the host, worked out once. */
interface Decision {
  req: PlacementRequest;
  strategy: Strategy;
  excluded: ReadonlySet<number>;
  group: PlacementGroup | undefined;
  /** The group's other members by host. */
  others: GroupPlacement;
  /** Names of the hosts running other members, for the strict-affinity reason. */
  memberHosts: string[];
  /** The requested VM's own holding, credited back on its host. */
  self: Holding | undefined;
}

const NO_MEMBERS: GroupPlacement = new Map();

export class PlacementIndex {
  /** Sorted by name: iteration order is then the order of `reasons` and of tie-breaks. */
  private readonly hosts: HostView[];
  private readonly names: string[];
  private readonly position = new Map<string, number>();
  /** State and inventory reasons: they cannot change between decisions. */
  private readonly fixedRejection: (string | null)[];
  private readonly capCpus: Float64Array;
  private readonly capMemoryMiB: Float64Array;
  private readonly capDiskBytes: Float64Array;
  private readonly usedCpus: Float64Array;
  private readonly usedMemoryMiB: Float64Array;
  private readonly usedDiskBytes: Float64Array;
  private readonly vmCount: Int32Array;
  private readonly holdings = new Map<string, Holding>();
  private readonly groups = new GroupMembership();

  constructor(
    hosts: readonly HostView[],
    vms: Iterable<PlacedVm>,
    private readonly config: SchedulerConfig,
  ) {
    this.hosts = [...hosts].sort((a, b) => compareNames(a.node.name, b.node.name));
    this.names = this.hosts.map((h) => h.node.name);
    this.names.forEach((name, i) => this.position.set(name, i));
    this.fixedRejection = this.hosts.map((h) => stateRejection(h) ?? inventoryRejection(h));
    const n = this.hosts.length;
    this.capCpus = new Float64Array(n);
    this.capMemoryMiB = new Float64Array(n);
    this.capDiskBytes = new Float64Array(n);
    this.usedCpus = new Float64Array(n);
    this.usedMemoryMiB = new Float64Array(n);
    this.usedDiskBytes = new Float64Array(n);
    this.vmCount = new Int32Array(n);
    this.hosts.forEach((h, i) => this.setCapacity(i, h));
    for (const vm of vms) this.addPlaced(vm);
  }

  /** Picks a host for `req`, or explains per host why none fits. Does not change the index. */
  place(req: PlacementRequest): PlacementResult {
    if (req.node !== undefined && !this.position.has(req.node)) {
      return { ok: false, reasons: { [req.node]: "no such node" } };
    }
    const d = this.decide(req);
    const verdicts = new Verdicts(this.names.length);
    const best = this.bestHost(d, verdicts);
    const describe = (i: number, verdict: Verdict, figure: number) =>
      this.describe(i, verdict, figure, d);
    if (best < 0) return { ok: false, reasons: verdicts.reasons(this.names, describe) };
    const result = {
      ok: true,
      node: this.names[best],
      freeMemoryMiB: Math.floor(this.freeMemoryMiB(best, d)),
      strategy: d.strategy,
    } as PlacementSuccess;
    lazyField(result, "scores", () => verdicts.scores(this.names));
    lazyField(result, "reasons", () => verdicts.reasons(this.names, describe));
    return result;
  }

  /**
   * Accounts for `vmName` now holding `req`'s resources on `node`. A VM the
   * index already holds is moved (migration, resize), not counted twice.
   */
  commit(vmName: string, node: string, req: PlacementRequest): void {
    const host = this.position.get(node);
    if (host === undefined) throw new Error(`placement index: no such node ${node}`);
    this.release(vmName);
    this.hold(vmName, {
      host,
      cpus: req.cpus,
      memoryMiB: req.memoryMiB,
      diskBytes: req.diskBytes ?? 0,
      group: req.group?.name,
    });
  }

  /**
   * Brings what `vmName` holds in line with `vm`, its current record (null: it is gone):
   * how a long-lived index follows changes to the state it was built from.
   */
  refresh(vmName: string, vm: PlacedVm | null): void {
    this.release(vmName);
    if (vm) this.addPlaced(vm);
  }

  /** Frees what `vmName` holds (deleted, or about to be re-placed). Unknown names are ignored. */
  release(vmName: string): void {
    const held = this.holdings.get(vmName);
    if (!held) return;
    this.holdings.delete(vmName);
    if (held.host < 0) return;
    this.usedCpus[held.host] -= held.cpus;
    this.usedMemoryMiB[held.host] -= held.memoryMiB;
    this.usedDiskBytes[held.host] -= held.diskBytes;
    this.vmCount[held.host]--;
    if (held.group !== undefined) this.groups.remove(held.group, held.host, vmName);
  }

  /** Capacity and usage of `node` as the scheduler sees it, e.g. for a rebalancer. */
  usage(node: string): HostUsage | undefined {
    const i = this.position.get(node);
    if (i === undefined) return undefined;
    return {
      capacity: {
        cpus: this.capCpus[i],
        memoryMiB: this.capMemoryMiB[i],
        diskBytes: this.capDiskBytes[i],
      },
      used: {
        cpus: this.usedCpus[i],
        memoryMiB: this.usedMemoryMiB[i],
        diskBytes: this.usedDiskBytes[i],
      },
      vms: this.vmCount[i],
    };
  }

  private setCapacity(i: number, host: HostView): void {
    const inv = host.node.inventory;
    if (!inv) return;
    this.capCpus[i] = inv.cpus * this.config["scheduler.overcommit.cpu"];
    this.capMemoryMiB[i] = inv.memoryMiB * this.config["scheduler.overcommit.memory"];
    this.capDiskBytes[i] = inv.diskGiB * GiB * this.config["scheduler.overcommit.disk"];
  }

  private addPlaced(vm: PlacedVm): void {
    // Deleted VMs are on their way out; unplaced ones hold nothing yet.
    if (vm.desired === "deleted" || vm.node === null) return;
    const runs = vm.template !== true;
    this.hold(vm.name, {
      host: this.position.get(vm.node) ?? -1,
      cpus: runs ? vm.cpus : 0,
      memoryMiB: runs ? vm.memoryMiB : 0,
      diskBytes: diskBytesOf(vm),
      group: vm.group,
    });
  }

  private hold(vmName: string, held: Holding): void {
    this.holdings.set(vmName, held);
    // A VM on a host that left the cluster still has a name worth keeping for release().
    if (held.host < 0) return;
    this.usedCpus[held.host] += held.cpus;
    this.usedMemoryMiB[held.host] += held.memoryMiB;
    this.usedDiskBytes[held.host] += held.diskBytes;
    this.vmCount[held.host]++;
    if (held.group !== undefined) this.groups.add(held.group, held.host, vmName);
  }

  private decide(req: PlacementRequest): Decision {
    const group = req.group;
    const others = group ? this.groups.othersOf(group.name, req.name) : NO_MEMBERS;
    return {
      req,
      strategy: req.strategy ?? this.config["scheduler.strategy"],
      excluded: this.positionsOf(req.exclude ?? []),
      group,
      others,
      memberHosts: [...others.keys()].sort((a, b) => a - b).map((i) => this.names[i]),
      self: req.name === undefined ? undefined : this.holdings.get(req.name),
    };
  }

  /** An explicit node is the only candidate; otherwise every host is. */
  private candidateRange(req: PlacementRequest): [number, number] {
    if (req.node === undefined) return [0, this.hosts.length];
    const i = this.position.get(req.node)!;
    return [i, i + 1];
  }

  private positionsOf(names: readonly string[]): ReadonlySet<number> {
    const set = new Set<number>();
    for (const name of names) {
      const i = this.position.get(name);
      if (i !== undefined) set.add(i);
    }
    return set;
  }

  /** Runs every candidate through the filters and scorers; -1 when none passes. */
  private bestHost(d: Decision, verdicts: Verdicts): number {
    let best = -1;
    let bestScore = 0;
    let bestVms = 0;
    const [from, to] = this.candidateRange(d.req);
    for (let i = from; i < to; i++) {
      if (!this.passes(i, d, verdicts)) continue;
      const score = this.score(i, d);
      const vms = this.vmCount[i] - (d.self?.host === i ? 1 : 0);
      verdicts.scored(i, score);
      if (best < 0 || outranks(d.strategy, score, vms, bestScore, bestVms)) {
        best = i;
        bestScore = score;
        bestVms = vms;
      }
    }
    return best;
  }

  /**
   * Filters in order: operator decisions (exclude, state), the request's own
   * rules (labels, strict groups), then capacity, so the reason shown is the
   * one that no amount of freed capacity would lift.
   */
  private passes(i: number, d: Decision, verdicts: Verdicts): boolean {
    if (d.excluded.size && d.excluded.has(i)) return verdicts.reject(i, Verdict.excluded, 0);
    if (this.fixedRejection[i] !== null) return verdicts.reject(i, Verdict.fixed, 0);
    const req = d.req;
    if (req.constraints?.length) {
      const broken = brokenConstraint(this.hosts[i].node.labels, req.constraints);
      if (broken >= 0) return verdicts.reject(i, Verdict.label, broken);
    }
    if (d.group && !groupAllows(d.group, d.others.get(i), d.memberHosts.length > 0)) {
      return verdicts.reject(i, Verdict.group, 0);
    }
    const memory = this.freeMemoryMiB(i, d);
    if (!memoryFits(memory, req.memoryMiB)) return verdicts.reject(i, Verdict.memory, memory);
    const cpus = this.freeCpus(i, d);
    if (!cpuFits(cpus, req.cpus)) return verdicts.reject(i, Verdict.cpu, cpus);
    if (req.pools?.length) {
      const broken = this.brokenPoolRule(i, req.pools);
      if (broken >= 0) return verdicts.reject(i, Verdict.pool, broken);
    }
    if (!req.diskBytes) return true;
    const disk = this.freeDiskBytes(i, d);
    return diskFits(disk, req.diskBytes) || verdicts.reject(i, Verdict.disk, disk);
  }

  /** The position of the first pool rule host `i` breaks, or -1. */
  private brokenPoolRule(i: number, rules: readonly PoolRule[]): number {
    const name = this.names[i];
    for (let k = 0; k < rules.length; k++) {
      const r = rules[k];
      if (r.node !== null && r.node !== name) return k;
      if (r.room === null) continue;
      const room = r.room[name];
      if (typeof room !== "number" || room < r.bytes) return k;
    }
    return -1;
  }

  private poolReason(i: number, r: PoolRule): string {
    const name = this.names[i];
    if (r.node !== null && r.node !== name) return `pool "${r.pool}" is on ${r.node}`;
    const room = r.room?.[name];
    if (room === undefined) return `pool "${r.pool}" not reported by this host`;
    if (typeof room === "string") return room;
    return `pool "${r.pool}" has ${gib(room)} GiB free < ${gib(r.bytes)} GiB requested`;
  }

  /** The reason for a rejection recorded during the decision `d`. */
  private describe(i: number, verdict: Verdict, figure: number, d: Decision): string {
    const req = d.req;
    switch (verdict) {
      case Verdict.excluded:
        return "excluded";
      case Verdict.label:
        return labelReason(this.hosts[i].node.labels, req.constraints![figure]);
      case Verdict.group:
        return groupReason(d.group!, d.others.get(i), d.memberHosts);
      case Verdict.memory:
        return memoryReason(figure, req.memoryMiB);
      case Verdict.cpu:
        return cpuReason(figure, req.cpus);
      case Verdict.disk:
        return diskReason(figure, req.diskBytes ?? 0);
      case Verdict.pool:
        return this.poolReason(i, req.pools![figure]);
      default:
        return this.fixedRejection[i] ?? "";
    }
  }

  private score(i: number, d: Decision): number {
    const freeAfter = this.freeMemoryMiB(i, d) - d.req.memoryMiB;
    return strategyScore(d.strategy, freeAfter, this.capMemoryMiB[i]) +
      groupScore(d.group, d.others.get(i)?.length ?? 0);
  }

  private freeMemoryMiB(i: number, d: Decision): number {
    const credit = d.self?.host === i ? d.self.memoryMiB : 0;
    return this.capMemoryMiB[i] - this.usedMemoryMiB[i] + credit;
  }

  private freeCpus(i: number, d: Decision): number {
    const credit = d.self?.host === i ? d.self.cpus : 0;
    return this.capCpus[i] - this.usedCpus[i] + credit;
  }

  private freeDiskBytes(i: number, d: Decision): number {
    const credit = d.self?.host === i ? d.self.diskBytes : 0;
    return this.capDiskBytes[i] - this.usedDiskBytes[i] + credit;
  }
}

function gib(bytes: number): string {
  return (bytes / GiB).toFixed(1);
}

function diskBytesOf(vm: PlacedVm): number {
  let total = 0;
  for (const disk of vm.disks ?? []) total += disk.sizeBytes;
  return total;
}

/** Code-unit order, as `<` compares: locale-independent, so identical on every node. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
