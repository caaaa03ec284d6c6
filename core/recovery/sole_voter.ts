/**
 * The storage-level step both recoveries share: turn a state machine into that
 * of a cluster whose only member is this node, and make it the node's Raft
 * starting point.
 *
 * Nothing here runs inside the Raft core. The changes are ordinary log entries
 * (configuration changes and commands, applied by the state machine's own
 * appliers, so they mean exactly what they mean in a running cluster), numbered
 * after the last index the node holds and stamped with a new term. They are
 * applied offline, then folded into a snapshot that is installed into the Raft
 * log as a received snapshot would be: the log is emptied, the hard state is
 * `{term, vote: null, commit: snapshot index}`, and the snapshot's membership is
 * `{voters: [self]}`. A node started on it is a one-voter cluster that elects
 * itself at once (ClusterNode.start), with every earlier entry applied.
 *
 * The entries, in order:
 * 1. `remove` for every other member (voter or learner): its member row and host
 *    record go, its certificate is revoked (a node that comes back with its old
 *    data dir is refused, 410) and its name is free to join again with a fresh
 *    join token and data dir. VMs keep their records, host name included.
 * 2. when `reseat` is given (restore on a new data dir): `addLearner` + `promote`
 *    of this node with its new URL and certificate; else `promote` if it was a
 *    learner.
 * 3. `joinToken.voidAll`: join tokens handed out before are void.
 * 4. `apiToken.create` of a fresh admin token (its secret goes to a file).
 * 5. `audit.append`: one `system:recovery` record saying what was done.
 *
 * @module
 */
import { ConflictError, NovaError } from "../errors/mod.ts";
import type { ConfChange, ConfState, Entry } from "../raft/types.ts";
import type { AuditInput, Command, StateMachine } from "../fsm/mod.ts";
import type { SqliteRaftLog } from "../store/mod.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";

/** What to make of the state machine. */
export interface SoleVoterPlan {
  /** This node's name. */
  self: string;
  /** Restore: (re)record this node as a member with this URL and certificate. */
  reseat?: { url: string; fingerprint: string; credentialHash: string };
  /** The action named in the audit record (`cluster.restore`, `cluster.forceNewCluster`). */
  action: string;
  /** Free text for the audit record. */
  detail: string;
  /** Wall clock of the recovery (epoch ms): stamps every entry. */
  at: number;
}

/** What {@link seatSoleVoter} did. */
export interface Seated {
  /** Index of the last entry applied: the snapshot's index. */
  index: number;
  term: number;
  /** Members removed (every member but this node). */
  removed: string[];
  /** The new admin token's name and secret (only its hash is in the state). */
  adminToken: { name: string; secret: string };
}

/** `recovery-20261203t071501`: a token name the token rules accept, unique per second. */
function recoveryTokenName(at: number): string {
  const stamp = new Date(at).toISOString().replace(/[-:]/g, "").slice(0, 15).toLowerCase();
  return `recovery-${stamp}`;
}

/**
 * Applies the plan's entries to `fsm` at indexes `firstIndex`… in `term`.
 * @throws {ConflictError} when the state refuses one of them (the state is then
 *   left at the entries before it; callers work on a scratch copy).
 */
export function seatSoleVoter(
  fsm: StateMachine,
  firstIndex: number,
  term: number,
  plan: SoleVoterPlan,
): Seated {
  const { self, at } = plan;
  const removed = fsm.members().map((m) => m.name).filter((n) => n !== self);
  const conf = (cc: ConfChange) => ({ type: "conf" as const, data: JSON.stringify(cc) });
  const cmd = (c: Command) => ({ type: "normal" as const, data: JSON.stringify(c) });
  const secret = randomToken("nva_");
  const tokenName = recoveryTokenName(at);
  const record: AuditInput = {
    at,
    principal: "system:recovery",
    role: null,
    source: self,
    node: self,
    requestId: null,
    method: "SYSTEM",
    route: plan.action,
    path: "",
    resource: "cluster",
    code: null,
    ms: 0,
    detail: plan.detail.slice(0, 500),
  };
  const ctx = (extra: Record<string, unknown> = {}) => JSON.stringify({ at, ...extra });
  const planned = [
    ...removed.map((name) => conf({ type: "remove", node: name, context: ctx() })),
    ...(plan.reseat
      ? [
        conf({ type: "addLearner", node: self, context: ctx({ ...plan.reseat }) }),
        conf({ type: "promote", node: self }),
      ]
      : fsm.member(self)?.role === "learner"
      ? [conf({ type: "promote", node: self })]
      : []),
    cmd({ op: "joinToken.voidAll", at }),
    cmd({
      op: "apiToken.create",
      hash: sha256Hex(secret),
      name: tokenName,
      role: "admin",
      expiresAt: null,
      by: "system:recovery",
      at,
    }),
    cmd({ op: "audit.append", records: [record], at }),
  ];
  const entries: Entry[] = planned.map((e, i) => ({ ...e, index: firstIndex + i, term }));
  const results = fsm.applyEntries(entries);
  for (const e of entries) {
    const r = results.get(e.index);
    if (r && !r.ok) {
      throw new ConflictError(
        `the state refused recovery step ${e.data.slice(0, 120)}: ${r.error.message}`,
      );
    }
  }
  const members = fsm.confState();
  if (members.voters.join() !== self || members.learners.length) {
    throw new NovaError(
      "internal",
      `after recovery the members are ${JSON.stringify(members)}, not ${self} alone`,
    );
  }
  return {
    index: entries[entries.length - 1].index,
    term,
    removed,
    adminToken: { name: tokenName, secret },
  };
}

/**
 * Snapshots `fsm` (at its applied index, taken in `term`) and installs that
 * snapshot into `log` as its whole content: entries dropped, hard state
 * `{term, vote: null, commit: index}`. Durable when it resolves.
 */
export async function installAsOnlySnapshot(
  log: SqliteRaftLog,
  fsm: StateMachine,
  term: number,
): Promise<{ index: number; term: number; conf: ConfState; bytes: number; file: string }> {
  const tmp = log.tempSnapshotPath();
  const snap = await fsm.snapshotToFile(tmp);
  const meta = { index: snap.index, term, conf: snap.conf };
  await log.save({
    snapshot: { meta, data: "", file: tmp },
    entries: [],
    hardState: { term, vote: null, commit: snap.index },
  });
  return { ...meta, bytes: snap.bytes, file: log.snapshotPath(meta) };
}
