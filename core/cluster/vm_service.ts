/**
 * VM operations offered to the API. Decisions (validation against state,
 * placement) are made on the leader against committed state; hosts then
 * converge on the desired state through their reconcile loops.
 */
import type { ClusterNode } from "./node.ts";
import type {
  CloudInitSpec,
  NicRequest,
  OperationBrief,
  RestartPolicy,
  TrackAs,
  VmChanges,
  VmDesired,
  VmDisk,
  VmRecord,
  VmSpec,
} from "../fsm/mod.ts";
import { ConflictError, NotFoundError, NotLeaderError, ValidationError } from "../errors/mod.ts";
import {
  explain,
  type HostView,
  place,
  type PlacedVm,
  type PlacementRequest,
  type PlacementResult,
} from "../scheduler/mod.ts";
import { validateCloudInit } from "../cloudinit/mod.ts";
import { KeyedSerializer } from "../concurrency/mod.ts";
import { noHostError, Planner } from "./planner.ts";
import { featureAllowed } from "../upgrade/levels.ts";
import { currentRequestId } from "../log/mod.ts";

/** A lifecycle call's answer: the VM (or its deletion), with the operation that follows it. */
export type Tracked<T> = T & { operation?: OperationBrief };

/**
 * Asks for the change to be followed as an operation, once every member can (cluster level
 * 2, core/upgrade/levels.ts): below it the answer is the VM alone, as older releases gave.
 */
function trackOf(node: ClusterNode): TrackAs | undefined {
  if (!featureAllowed("track", node.fsm.clusterLevel())) return undefined;
  const requestId = currentRequestId();
  return requestId ? { requestId } : {};
}

export interface CreateVmRequest {
  name: string;
  image?: string;
  fromTemplate?: string;
  cpus?: number;
  memoryMiB?: number;
  diskGiB?: number;
  node?: string;
  ha: boolean;
  start: boolean;
  labels: Record<string, string>;
  restartPolicy?: RestartPolicy;
  cloudInit?: CloudInitSpec;
  group?: string;
  constraints?: LabelConstraint[];
  strategy?: "spread" | "pack";
  haPriority?: number;
  haMaxRestarts?: number;
  haRestartWindowMs?: number;
  /**
   * The storage pool of the VM's disks (core/fsm/pools.ts; default `dir`, or `shared` for HA
   * VMs, which need a shared pool to restart on another host).
   */
  pool?: string;
  /** Decide and explain, record nothing. */
  dryRun?: boolean;
  /** NICs on networks; none: the one user-mode NIC. */
  nics?: NicRequest[];
}

export interface LabelConstraint {
  key: string;
  op: "=" | "!=";
  value: string;
}

export interface PlacementDecision {
  dryRun: true;
  name: string;
  node: string;
  strategy: string;
  scores: Record<string, number>;
  rejected: Record<string, string>;
}

const GiB = 2 ** 30;
/** Root disk of a kernel-boot VM when none is asked for: sparse, so cheap. */
const DEFAULT_KERNEL_DISK_GIB = 1;

const decisions = new KeyedSerializer<ClusterNode>();

/**
 * Runs the rarer placement decisions (migration destinations, HA restarts,
 * drains, resizes) one at a time on the leader, each against the state its
 * predecessors committed plus the creates in flight. Creates do not wait here:
 * they go through the node's {@link Planner}.
 */
export function serializedDecision<T>(node: ClusterNode, decide: () => Promise<T>): Promise<T> {
  return decisions.run(node, decide);
}

const planners = new WeakMap<ClusterNode, Planner>();

/** The node's planner of new VMs (made on first use; it decides only while the node leads). */
export function plannerOf(node: ClusterNode): Planner {
  let planner = planners.get(node);
  if (!planner) planners.set(node, planner = new Planner(node, () => hostViews(node)));
  return planner;
}

/** Every placed VM the scheduler must count: the applied state and the creates in flight. */
export function placedVms(node: ClusterNode): PlacedVm[] {
  const reserved = plannerOf(node).reservations();
  if (!reserved.length) return node.fsm.vms();
  const names = new Set(reserved.map((v) => v.name));
  return [...node.fsm.vms().filter((v) => !names.has(v.name)), ...reserved];
}

export function hostViews(node: ClusterNode): HostView[] {
  const members = new Map(node.status().members.map((m) => [m.name, m]));
  return node.fsm.nodes().map((n) => {
    const state = members.get(n.name)?.state ?? "offline";
    return { node: n, schedulable: state === "ready", state };
  });
}

function mustGetVm(node: ClusterNode, name: string): VmRecord {
  const vm = node.fsm.vm(name);
  if (!vm) throw new NotFoundError("vm", name);
  return vm;
}

/** The scheduler's decision on committed state, or a conflict naming every host's reason. */
export function placeOrExplain(node: ClusterNode, req: PlacementRequest) {
  const placed = place(req, hostViews(node), placedVms(node), node.fsm.config().config);
  if (!placed.ok) throw noHostError(node, req.name, placed.reasons);
  return placed;
}

function groupOf(node: ClusterNode, name: string | undefined) {
  if (!name) return undefined;
  const group = node.fsm.group(name);
  if (!group) throw ValidationError.field("group", `no placement group named "${name}"`);
  return group;
}

/** What the scheduler needs to know about an existing VM to place it again (HA, migration). */
export function placementRequestOf(
  node: ClusterNode,
  vm: VmRecord,
  extra: Partial<PlacementRequest> = {},
): PlacementRequest {
  // A move keeps the disks where their pools are: a pool with one host pins the VM to it.
  const pools = node.fsm.pools.rulesFor(vm.disks, false);
  return {
    name: vm.name,
    cpus: vm.cpus,
    memoryMiB: vm.memoryMiB,
    constraints: vm.constraints,
    strategy: vm.strategy,
    group: vm.group ? node.fsm.group(vm.group) ?? undefined : undefined,
    ...(pools.length ? { pools } : {}),
    ...extra,
  };
}

function volumeName(vm: string, uuid: string, disk: string): string {
  return `${vm}-${uuid.slice(0, 8)}-${disk}`;
}

function rootDiskFor(
  node: ClusterNode,
  req: CreateVmRequest,
  uuid: string,
  image: string,
): VmDisk {
  const img = node.fsm.image(image)!;
  const minBytes = img.kind === "disk" ? img.disk!.virtualBytes : 0;
  const sizeBytes = req.diskGiB !== undefined
    ? req.diskGiB * GiB
    : Math.max(minBytes, img.kind === "disk" ? 0 : DEFAULT_KERNEL_DISK_GIB * GiB);
  if (sizeBytes < minBytes) {
    throw ValidationError.field(
      "diskGiB",
      `image "${image}" needs at least ${Math.ceil(minBytes / GiB)} GiB`,
    );
  }
  return {
    id: "root",
    volume: volumeName(req.name, uuid, "root"),
    sizeBytes,
    source: img.kind === "disk" ? { kind: "image", image } : { kind: "blank" },
  };
}

/**
 * `vm create`: validated here, then placed and recorded by the planner along with
 * whatever else is being created (no wait for other creates' commits).
 */
export async function createVm(
  node: ClusterNode,
  req: CreateVmRequest,
  by: string,
): Promise<Tracked<VmRecord>> {
  if (req.fromTemplate) return await cloneVm(node, req.fromTemplate, req, "linked", by);
  if (!node.isLeader()) throw new NotLeaderError(node.leaderId());
  if (!req.image) throw ValidationError.field("image", "required (or --from-template)");
  if (node.fsm.vm(req.name)) throw new ConflictError(`VM "${req.name}" already exists`);
  if (!node.fsm.image(req.image)) {
    throw ValidationError.field("image", `no image named "${req.image}"`);
  }
  const cloudInit = req.cloudInit ? validateCloudInit(req.cloudInit) : null;
  const nics = checkNicNetworks(node, req.nics ?? []);
  const cpus = req.cpus ?? 1;
  const memoryMiB = req.memoryMiB ?? 256;
  const uuid = crypto.randomUUID();
  const pool = req.pool ?? (req.ha ? "shared" : "dir");
  const record = node.fsm.pools.get(pool);
  if (pool === "shared" && !record) {
    throw ValidationError.field(
      req.ha ? "ha" : "pool",
      "needs the shared pool: set storage.sharedDir (a path mounted on every host) first",
    );
  }
  if (!record) throw ValidationError.field("pool", `no pool named "${pool}"`);
  if (req.ha && record.driver !== "shared-dir") {
    throw ValidationError.field("pool", "an HA VM needs its disks on a shared-dir pool");
  }
  const root = { ...rootDiskFor(node, req, uuid, req.image), pool };
  const poolRules = node.fsm.pools.rulesFor([root], true);
  const placement: PlacementRequest = {
    ...(poolRules.length ? { pools: poolRules } : {}),
    name: req.name,
    cpus,
    memoryMiB,
    node: req.node,
    diskBytes: root.sizeBytes,
    constraints: req.constraints,
    strategy: req.strategy,
    group: groupOf(node, req.group),
  };
  if (req.dryRun) {
    return dryRunResult(req.name, placeOrExplain(node, placement)) as unknown as VmRecord;
  }
  const vm: VmSpec = {
    name: req.name,
    uuid,
    image: req.image,
    cpus,
    memoryMiB,
    node: null,
    ha: req.ha,
    labels: req.labels,
    desired: req.start ? "running" : "stopped",
    restartPolicy: req.restartPolicy ?? "never",
    disks: [root],
    cloudInit,
    template: false,
    generation: 0,
    snapshots: [],
    group: req.group,
    constraints: req.constraints,
    strategy: req.strategy,
    haPriority: req.haPriority,
    haMaxRestarts: req.haMaxRestarts,
    haRestartWindowMs: req.haRestartWindowMs,
    ...(nics.length ? { nics } : {}),
  };
  return await plannerOf(node).create(vm, placement, by, req.start ? trackOf(node) : undefined);
}

/**
 * The NICs asked for, each on a network that exists (named in the error when not). Addresses
 * and MACs are decided, or checked, when the create is applied: concurrent creates race there.
 */
function checkNicNetworks(node: ClusterNode, nics: NicRequest[]): NicRequest[] {
  nics.forEach((n, i) => {
    if (!node.fsm.network(n.network)) {
      throw ValidationError.field(`nics[${i}].network`, `network "${n.network}" not found`);
    }
    for (const g of n.securityGroups ?? []) {
      if (!node.fsm.securityGroups.get(g)) {
        throw ValidationError.field(
          `nics[${i}].securityGroups`,
          `security group "${g}" not found`,
        );
      }
    }
  });
  return nics;
}

function dryRunResult(
  name: string,
  decision: Extract<PlacementResult, { ok: true }>,
): PlacementDecision {
  return {
    dryRun: true,
    name,
    node: decision.node,
    strategy: decision.strategy,
    scores: { ...decision.scores },
    rejected: { ...decision.reasons },
  };
}

/**
 * A new VM whose disks start as copies of `source`'s. Disks are local to the
 * source's host, so the clone lands there. Linked clones share the source's
 * blocks and so need an immutable source: a template.
 */
export function cloneVm(
  node: ClusterNode,
  sourceName: string,
  req: CreateVmRequest,
  mode: "linked" | "full",
  by: string,
): Promise<Tracked<VmRecord>> {
  return serializedDecision(node, () => decideClone(node, sourceName, req, mode, by));
}

async function decideClone(
  node: ClusterNode,
  sourceName: string,
  req: CreateVmRequest,
  mode: "linked" | "full",
  by: string,
): Promise<Tracked<VmRecord>> {
  await node.linearizableRead();
  const src = mustGetVm(node, sourceName);
  if (node.fsm.vm(req.name)) throw new ConflictError(`VM "${req.name}" already exists`);
  if (src.desired === "deleted") throw new ConflictError(`VM "${sourceName}" is being deleted`);
  if (mode === "linked" && !src.template) {
    throw new ConflictError(
      `a linked clone needs a template; run "vm template ${sourceName}" first or clone with --full`,
    );
  }
  if (!src.template && !isAtRest(src)) {
    throw new ConflictError(`VM "${sourceName}" must be stopped to be cloned`);
  }
  if (req.node && req.node !== src.node) {
    throw ValidationError.field("node", `clones are created on the source's host ${src.node}`);
  }
  const uuid = crypto.randomUUID();
  const cpus = req.cpus ?? src.cpus;
  const memoryMiB = req.memoryMiB ?? src.memoryMiB;
  // Attached volumes stay with the source: a clone copies the VM's own disks.
  const disks: VmDisk[] = src.disks.filter((d) => d.source.kind !== "attached").map((d) => ({
    id: d.id,
    volume: volumeName(req.name, uuid, d.id),
    sizeBytes: d.id === "root" && req.diskGiB
      ? Math.max(d.sizeBytes, req.diskGiB * GiB)
      : d.sizeBytes,
    pool: d.pool,
    source: { kind: "volume", volume: d.volume, mode },
  }));
  const vm: VmSpec = {
    name: req.name,
    uuid,
    image: src.image,
    cpus,
    memoryMiB,
    node: null,
    ha: req.ha || src.ha,
    labels: { ...src.labels, ...req.labels },
    desired: req.start ? "running" : "stopped",
    restartPolicy: req.restartPolicy ?? src.restartPolicy,
    disks,
    cloudInit: req.cloudInit ? validateCloudInit(req.cloudInit) : src.cloudInit,
    template: false,
    generation: 0,
    snapshots: [],
    // The same networks and security groups; its own addresses and MACs.
    ...(src.nics?.length
      ? {
        nics: src.nics.map((n) => ({
          network: n.network,
          ...(n.securityGroups?.length ? { securityGroups: n.securityGroups } : {}),
        })),
      }
      : {}),
  };
  // Disks are local to the source's host: the clone goes there or nowhere.
  return await plannerOf(node).create(
    vm,
    { node: src.node! },
    by,
    req.start ? trackOf(node) : undefined,
  );
}

/** VMs whose disks are linked clones of `vm`'s volumes. */
export function linkedClonesOf(node: ClusterNode, vm: VmRecord): string[] {
  // Only a template backs linked clones, and it stays one: other VMs need no scan of all VMs.
  if (!vm.template) return [];
  const volumes = new Set(vm.disks.map((d) => d.volume));
  return node.fsm.vms().filter((v) =>
    v.disks.some((d) =>
      d.source.kind === "volume" && d.source.mode === "linked" && volumes.has(d.source.volume)
    )
  ).map((v) => v.name);
}

export async function setVmDesired(
  node: ClusterNode,
  name: string,
  desired: VmDesired,
  by: string,
  opts: { force?: boolean; keepDisks?: boolean } = {},
): Promise<Tracked<VmRecord | { name: string; deleted: true }>> {
  await node.linearizableRead();
  const vm = mustGetVm(node, name);
  if (desired === "deleted") {
    const active = vm.desired === "running" ||
      ["running", "starting", "stopping"].includes(vm.state);
    if (!opts.force && active) {
      throw new ConflictError(`VM "${name}" is running; stop it first or delete with --force`);
    }
    const clones = linkedClonesOf(node, vm);
    if (clones.length && !opts.keepDisks) {
      throw new ConflictError(`VM "${name}" backs linked clones: ${clones.join(", ")}`, {
        clones,
      });
    }
  }
  if (desired === "running" && vm.template) {
    throw new ConflictError(`"${name}" is a template; clone it to run it`);
  }
  return await node.propose({
    op: "vm.desired",
    name,
    desired,
    keepDisks: opts.keepDisks,
    force: opts.force,
    track: trackOf(node),
    by,
    at: Date.now(),
  }) as Tracked<VmRecord>;
}

async function updateVm(node: ClusterNode, name: string, changes: VmChanges, by: string) {
  return await node.propose({ op: "vm.update", name, changes, by, at: Date.now() }) as VmRecord;
}

/** Stopped, or failed with nothing running: no QEMU holds its disks. */
export function isAtRest(vm: VmRecord): boolean {
  return vm.desired === "stopped" && (vm.state === "stopped" || vm.state === "failed");
}

function mustBeStopped(vm: VmRecord, what: string): void {
  if (!isAtRest(vm)) {
    throw new ConflictError(`VM "${vm.name}" must be stopped to ${what} (it is ${vm.state})`);
  }
}

/** `vm restart`: the host replaces the QEMU of an older generation (graceful stop, then start). */
export async function restartVm(
  node: ClusterNode,
  name: string,
  by: string,
): Promise<Tracked<VmRecord>> {
  await node.linearizableRead();
  const vm = mustGetVm(node, name);
  if (vm.desired !== "running") {
    throw new ConflictError(`VM "${name}" is not running; use vm start`);
  }
  return await node.propose({
    op: "vm.update",
    name,
    changes: { generation: vm.generation + 1 },
    track: trackOf(node),
    by,
    at: Date.now(),
  }) as Tracked<VmRecord>;
}

/**
 * `vm resize`: CPUs and memory while stopped; the root disk may grow at any time: while the VM
 * runs, its host grows it with QMP `block_resize` (host/vm_host.ts), else at its next start.
 */
export function resizeVm(
  node: ClusterNode,
  name: string,
  req: { cpus?: number; memoryMiB?: number; diskGiB?: number },
  by: string,
): Promise<VmRecord> {
  return serializedDecision(node, () => decideResize(node, name, req, by));
}

async function decideResize(
  node: ClusterNode,
  name: string,
  req: { cpus?: number; memoryMiB?: number; diskGiB?: number },
  by: string,
): Promise<VmRecord> {
  await node.linearizableRead();
  const vm = mustGetVm(node, name);
  if (req.cpus !== undefined || req.memoryMiB !== undefined) {
    mustBeStopped(vm, "change its CPUs or memory");
  } else if (vm.migration) {
    throw new ConflictError(`VM "${name}" is migrating; resize its disk after the migration`);
  }
  const changes: VmChanges = {};
  if (req.cpus !== undefined) changes.cpus = req.cpus;
  if (req.memoryMiB !== undefined) changes.memoryMiB = req.memoryMiB;
  if (req.diskGiB !== undefined) {
    const root = vm.disks.find((d) => d.id === "root")!;
    if (req.diskGiB * GiB < root.sizeBytes) {
      throw ValidationError.field(
        "diskGiB",
        `cannot shrink the root disk below ${root.sizeBytes / GiB} GiB`,
      );
    }
    changes.disks = vm.disks.map((d) =>
      d.id === "root" ? { ...d, sizeBytes: req.diskGiB! * GiB } : d
    );
  }
  if (!Object.keys(changes).length) {
    throw ValidationError.field("cpus", "nothing to change: give --cpus, --memory or --disk");
  }
  if (changes.cpus !== undefined || changes.memoryMiB !== undefined) {
    // Capacity is checked as if placing the resized VM on its own host, without its old size.
    const others = {
      name,
      cpus: changes.cpus ?? vm.cpus,
      memoryMiB: changes.memoryMiB ?? vm.memoryMiB,
      node: vm.node!,
    };
    const placed = place(
      others,
      hostViews(node),
      placedVms(node).filter((v) => v.name !== name),
      node.fsm.config().config,
    );
    if (!placed.ok) {
      throw new ConflictError(`${vm.node} cannot fit ${name} resized: ${explain(placed.reasons)}`, {
        reasons: placed.reasons,
      });
    }
  }
  return await updateVm(node, name, changes, by);
}

/** `vm template`: freezes a stopped VM as the immutable base of linked clones. */
export async function markTemplate(node: ClusterNode, name: string, by: string): Promise<VmRecord> {
  await node.linearizableRead();
  const vm = mustGetVm(node, name);
  if (vm.template) return vm;
  mustBeStopped(vm, "become a template");
  if (vm.snapshots.length) {
    throw new ConflictError(`VM "${name}" has snapshots; delete them before making it a template`);
  }
  return await updateVm(node, name, { template: true }, by);
}
