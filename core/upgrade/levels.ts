/**
 * Cluster levels: which state schema and which commands a cluster may use, and which
 * program releases understand them. Pure data and arithmetic, shared by the state machine
 * (core/fsm/cluster_level.ts) and the leader's gate and upgrader (./mod.ts).
 *
 * The contract, as etcd's cluster version or Nomad's minimum server version:
 * - Every replica applies every committed entry. A node whose program does not know a
 *   command kind rejects it ("unknown command", core/fsm/state_machine.ts) while newer
 *   nodes apply it: the replicas would silently diverge. So a command kind (or a new
 *   field that changes what a command does) introduced in a release belongs to a level,
 *   and no leader proposes it before the cluster runs at that level.
 * - The level rises only through a `cluster.upgrade` entry, which the leader proposes
 *   once every member (voters, learners and hosts) reports a program version supporting
 *   it. The entry is itself new to older programs: it is exactly what the rule protects.
 * - Levels never fall. A program refuses a data dir at a level above its own
 *   (`assertDataDirSupported`), and halts rather than apply an upgrade it does not know.
 * - Releases never drop a level: a version newer than any this program knows supports
 *   at least {@link MAX_KNOWN_LEVEL}.
 * - Members report their version in their inventory (`node.upsert`); one that reports
 *   none (or one this program cannot parse) counts as level 1, as does a state with no
 *   level recorded (every release before 0.2.0 wrote none).
 */
import type { Command, OperationKind } from "../fsm/commands.ts";

export interface Level {
  level: number;
  /** The first release that supports it. */
  since: string;
  /** What it adds, for messages and the README. */
  adds: string;
}

/** Every level, oldest first. A new one goes at the end, with the release that brings it. */
export const LEVELS: readonly Level[] = [
  { level: 1, since: "0.1.0", adds: "the state of release 0.1.0" },
  {
    level: 2,
    since: "0.2.0",
    adds:
      "the recorded cluster level (cluster.upgrade), operator metadata on hosts (node.meta), VGA displays, VM snapshots as operations, VM lifecycle operations (the track field of vm.desired, vm.update and plan.apply) and hosts' reports of hot-plugged devices (vm.devices)",
  },
];

export const MAX_KNOWN_LEVEL = LEVELS[LEVELS.length - 1].level;

/**
 * Command kinds that need a level above 1, and which. Anything not listed is level 1 (as
 * old as release 0.1.0). `cluster.upgrade` is not here: the upgrader proposes it only once
 * every member supports the level it names (see the contract above).
 */
export const OP_LEVEL: Readonly<Partial<Record<Command["op"], number>>> = {
  "node.meta": 2,
  "vm.devices": 2,
};

/**
 * What hosts do or report differently from release 0.1.0 without a command kind of its own,
 * and the level it needs. A host holds back until its cluster runs at that level:
 * - `display`: fresh QEMUs get a VGA device, and `display` is in `vm.observed` and
 *   `vm.snapshot.add`. A 0.1.0 leader refuses those fields (strict peer schemas), and a 0.1.0
 *   host launches without the device, so a VGA guest could neither report under an old leader
 *   nor migrate to an old host, and its memory snapshots would not load there.
 * - `devices`: hosts report what their QEMUs have plugged (`vm.devices`, a command kind of
 *   level 2 a 0.1.0 leader refuses); below it they send nothing, and waits for hot-plug
 *   answer at once (api/routes/hotplug_wait.ts).
 * - `track`: a desired-state change may ask to be followed as an operation (its `track`
 *   field: core/fsm/vm_operations.ts). An older program ignores the field and makes no
 *   operation, so a leader leaves it out below this level, and the state machine ignores it
 *   there too: every replica then agrees.
 */
export const FEATURE_LEVEL = { display: 2, devices: 2, track: 2 } as const;

/** Whether a cluster running at `level` may use `feature`. */
export function featureAllowed(feature: keyof typeof FEATURE_LEVEL, level: number): boolean {
  return level >= FEATURE_LEVEL[feature];
}

/** The level a command kind needs (1 unless {@link OP_LEVEL} says otherwise). */
export function levelOfOp(op: string): number {
  return (OP_LEVEL as Record<string, number | undefined>)[op] ?? 1;
}

/** Whether `cmd` asks for its change to be followed as an operation. */
export function isTracked(cmd: { op: string }): boolean {
  if ((cmd as { track?: unknown }).track !== undefined) return true;
  const creates = (cmd as { creates?: { track?: unknown }[] }).creates;
  return cmd.op === "plan.apply" && !!creates?.some((c) => c.track !== undefined);
}

/**
 * Operation kinds that need a level above 1. Every replica stores any kind, but only a
 * host whose release knows a kind runs it: one recorded for an older runner would stay
 * "running" forever. Below its level, what the operation does is done as the older release
 * did it: VM snapshots run at once on the VM's host (api/routes/vms.ts).
 */
export const OPERATION_KIND_LEVEL: Readonly<Partial<Record<OperationKind, number>>> = {
  "snapshot-create": 2,
  "snapshot-restore": 2,
  "snapshot-delete": 2,
};

/** The level an operation kind needs (1 unless {@link OPERATION_KIND_LEVEL} says otherwise). */
function levelOfOperationKind(kind: string): number {
  return (OPERATION_KIND_LEVEL as Record<string, number | undefined>)[kind] ?? 1;
}

/** Whether a cluster running at `level` may record operations of `kind`. */
export function operationKindAllowed(kind: OperationKind, level: number): boolean {
  return level >= levelOfOperationKind(kind);
}

/**
 * The level a command needs: its kind's ({@link levelOfOp}), for `operation.create` the
 * higher of that and its operation kind's, and for a change followed as an operation
 * ({@link isTracked}) at least the `track` feature's.
 */
export function levelOfCommand(cmd: { op: string; operation?: { kind?: string } }): number {
  const kind = cmd.op === "operation.create" ? cmd.operation?.kind : undefined;
  const ofKind = kind === undefined ? 1 : levelOfOperationKind(kind);
  return Math.max(levelOfOp(cmd.op), ofKind, isTracked(cmd) ? FEATURE_LEVEL.track : 1);
}

/** The release that brought `level` (its `since`), or null for a level no release here knows. */
export function releaseOfLevel(level: number): string | null {
  return LEVELS.find((l) => l.level === level)?.since ?? null;
}

/** `[major, minor, patch]` of a version such as "0.2.0" or "0.2.0 (simulated host)", or null. */
export function parseVersion(version: string | null | undefined): [number, number, number] | null {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version ?? "");
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

function compare(a: [number, number, number], b: [number, number, number]): number {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/**
 * The highest level a program `version` supports: the last level whose release is not
 * newer than it. No version, or one that does not parse, is level 1.
 */
export function levelOfVersion(version: string | null | undefined): number {
  const v = parseVersion(version);
  if (!v) return 1;
  let best = 1;
  for (const l of LEVELS) if (compare(parseVersion(l.since)!, v) <= 0) best = l.level;
  return best;
}
