/** Public shapes of the scheduler: what is asked, what it sees, what it answers. */
import type { ClusterConfig } from "../config/mod.ts";
import type { NodeRecord } from "../fsm/mod.ts";

export type Strategy = "spread" | "pack";

/** A node-label requirement, as `--constraint zone=a` or `--constraint zone!=b`. */
export interface LabelConstraint {
  key: string;
  op: "=" | "!=";
  value: string;
}

/** The placement group a VM belongs to; membership is the `group` field of VM records. */
export interface PlacementGroup {
  name: string;
  policy: "affinity" | "anti-affinity";
  /** Strict groups reject hosts; soft ones only weigh on the score. */
  strict: boolean;
}

export interface PlacementRequest {
  /** The VM being placed: it never counts against itself (resize, migration). */
  name?: string;
  cpus: number;
  memoryMiB: number;
  /** Total size of the VM's disks; the disk filter is skipped when absent. */
  diskBytes?: number;
  /** Explicit host, as `vm create --node`. */
  node?: string;
  /** Hosts that must not be chosen, e.g. the source of a migration. */
  exclude?: readonly string[];
  constraints?: readonly LabelConstraint[];
  group?: PlacementGroup;
  /** Overrides `scheduler.strategy` for this request. */
  strategy?: Strategy;
  /** The storage pools the VM's disks live in, as far as they restrict its hosts. */
  pools?: readonly PoolRule[];
}

/**
 * What a storage pool asks of a host: to be its one host (`node`), and to have
 * room for `bytes` of new disks in it (`room`: per host, the bytes free after
 * overcommit or why the pool cannot be used there; null: not checked).
 */
export interface PoolRule {
  pool: string;
  node: string | null;
  bytes: number;
  room: Readonly<Record<string, number | string>> | null;
}

export interface HostView {
  node: NodeRecord;
  /**
   * Whether the host accepts new VMs. Defaults to `state === "ready"`; a
   * caller may veto a ready host (the state is then still reported).
   */
  schedulable?: boolean;
  /** "ready" | "cordoned" | "draining" | "offline" | anything else a caller reports. */
  state: string;
}

/**
 * What the scheduler needs of a VM already in the cluster. VmRecord fits;
 * `group` is read when present so records can carry it before VmSpec does.
 */
export interface PlacedVm {
  name: string;
  node: string | null;
  cpus: number;
  memoryMiB: number;
  desired: string;
  disks?: readonly { sizeBytes: number }[];
  group?: string;
  /** Templates never run: they hold disk space but no CPU or memory. */
  template?: boolean;
}

export type SchedulerConfig = Pick<
  ClusterConfig,
  | "scheduler.strategy"
  | "scheduler.overcommit.cpu"
  | "scheduler.overcommit.memory"
  | "scheduler.overcommit.disk"
>;

export interface PlacementSuccess {
  ok: true;
  node: string;
  /** Free memory on the chosen host before this VM, after overcommit. */
  freeMemoryMiB: number;
  strategy: Strategy;
  /** Score of every host that passed the filters (higher wins), for `--dry-run`. */
  scores: Record<string, number>;
  /** Why each other host was rejected. */
  reasons: Record<string, string>;
}

export interface PlacementFailure {
  ok: false;
  reasons: Record<string, string>;
}

export type PlacementResult = PlacementSuccess | PlacementFailure;
