/**
 * `novactl cluster recover --force-new-cluster`: the offline rewrite that makes a
 * surviving (stopped) member of a cluster that lost its quorum the only voter of
 * that same cluster, keeping its state (etcd's `--force-new-cluster`, Incus's
 * `cluster recover-from-quorum-loss`).
 *
 * What is kept: every entry in the survivor's log. Entries it had applied are in
 * its state already. Entries it knew were committed but had not applied yet are
 * applied now, as a restart would. Entries it holds but never learned were
 * committed are applied too: the old leader may have committed them (and
 * answered its client) without the survivor hearing of it, and a new Raft leader
 * holding them would commit them the same way. So nothing the survivor received
 * is dropped; a write whose client got a timeout may have taken effect. What is
 * lost is what never reached the survivor: writes the others committed among
 * themselves after its last append.
 *
 * The steps, each safe to crash in:
 * 1. refuse unless the node is stopped (node_lock.ts); hold `recover.lock`;
 * 2. copy `state.db` to a scratch file (`VACUUM INTO`) and bring the copy up to
 *    the log's snapshot and then its last entry;
 * 3. apply the recovery entries (sole_voter.ts) to the copy;
 * 4. write the new admin token to `DIR/recovery.token`;
 * 5. install a snapshot of the copy into `raft.db` (the one durable switch: before
 *    it the data dir is unchanged, after it a starting node restores `state.db`
 *    from that snapshot, ClusterNode.recoverStateMachine);
 * 6. restore `state.db` from the snapshot now, remove the scratch files.
 *
 * @module
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { ConflictError, NovaError, ValidationError } from "../errors/mod.ts";
import { ApplyFailedError } from "../errors/mod.ts";
import { StateMachine } from "../fsm/mod.ts";
import {
  pathExists,
  readIdentity,
  SqliteRaftLog,
  TEMP_PREFIX,
  writeFileDurably,
} from "../store/mod.ts";
import { lockForRewrite } from "./node_lock.ts";
import { installAsOnlySnapshot, seatSoleVoter } from "./sole_voter.ts";

/** Where `cluster recover` writes the secret of the admin token it creates. */
export const RECOVERY_TOKEN_FILE = "recovery.token";

/** Entries applied per transaction while catching the copy up with the log. */
const APPLY_BATCH = 1_000;

/** What a forced recovery found and did. */
export interface RecoveryReport {
  node: string;
  clusterId: string;
  /** Members removed from the configuration. */
  removed: string[];
  /** The survivor's applied index, commit index and last log index before. */
  before: { applied: number; commit: number; lastIndex: number; term: number };
  /** Entries applied during the recovery: committed-but-unapplied plus the uncommitted tail. */
  appliedNow: { committed: number; uncommitted: number };
  /** The snapshot the node now starts from. */
  index: number;
  term: number;
  vms: number;
  /** Name of the admin token created, and the file holding its secret. */
  adminToken: { name: string; file: string };
  ms: number;
}

/**
 * Rewrites the stopped node's data dir `dataDir` so that it is the sole voter of
 * its cluster. Idempotent: run again on a recovered dir it removes nothing more.
 *
 * @throws {ValidationError} (field `data-dir`) when the dir holds no node state
 * @throws {ConflictError} while the node (or another recovery) runs on it, or when
 *   the node was removed from its cluster
 */
export async function forceNewCluster(dataDir: string, now = Date.now()): Promise<RecoveryReport> {
  const t0 = performance.now();
  const identity = await readIdentity(dataDir).catch((err) => {
    throw ValidationError.field("data-dir", `cannot read ${dataDir}/node.json: ${err.message}`);
  });
  if (!identity) {
    throw ValidationError.field("data-dir", `${dataDir} holds no node.json: not a node's data dir`);
  }
  for (const f of ["raft.db", "state.db"]) {
    if (!(await pathExists(join(dataDir, f)))) {
      throw ValidationError.field("data-dir", `${dataDir} has no ${f}: nothing to recover`);
    }
  }
  if (identity.removedAt) {
    throw new ConflictError(
      `${identity.name} was removed from its cluster at ${identity.removedAt}; its state is not the cluster's`,
    );
  }
  const unlock = await lockForRewrite(dataDir);
  const scratch = join(dataDir, `${TEMP_PREFIX}recover-state.db`);
  try {
    removeDb(scratch);
    const src = new DatabaseSync(join(dataDir, "state.db"), { readOnly: true });
    try {
      src.exec(`VACUUM INTO '${scratch.replaceAll("'", "''")}'`);
    } finally {
      src.close();
    }
    const log = new SqliteRaftLog(join(dataDir, "raft.db"));
    const fsm = new StateMachine(scratch);
    let report: Omit<RecoveryReport, "ms" | "vms">;
    let snapFile: string;
    try {
      const snap = log.snapshot();
      if (snap.meta.index > fsm.appliedIndex() && snap.file) {
        fsm.restoreFromFileSync(snap.file, snap.meta.index);
      }
      const hard = log.hardState();
      const last = log.lastIndex();
      const lastTerm = log.term(last);
      const before = {
        applied: fsm.appliedIndex(),
        commit: hard.commit,
        lastIndex: last,
        term: Math.max(hard.term, lastTerm),
      };
      if (fsm.clusterId() !== identity.clusterId) {
        throw new ConflictError(
          `${dataDir}: state belongs to cluster ${fsm.clusterId()}, node.json to ${identity.clusterId}`,
        );
      }
      if (!fsm.member(identity.name)) {
        throw new ConflictError(
          `${identity.name} is not a member in its own replicated state; it cannot lead the cluster alone`,
        );
      }
      for (let lo = before.applied + 1; lo <= last; lo += APPLY_BATCH) {
        const batch = log.entries(lo, Math.min(last, lo + APPLY_BATCH - 1) + 1);
        try {
          fsm.applyEntries(batch);
        } catch (err) {
          const e = err instanceof ApplyFailedError ? err.message : String(err);
          throw new NovaError("internal", `${dataDir}: ${e}; nothing was changed`);
        }
      }
      const term = before.term + 1;
      const removedNames = fsm.members().map((m) => m.name).filter((n) => n !== identity.name);
      const seated = seatSoleVoter(fsm, last + 1, term, {
        self: identity.name,
        action: "cluster.forceNewCluster",
        detail: `forced a new cluster of ${identity.name} alone; removed ${
          removedNames.join(", ") || "nobody"
        }; kept log entries up to ${last} (commit was ${hard.commit}, applied ${before.applied})`,
        at: now,
      });
      await writeFileDurably(
        join(dataDir, RECOVERY_TOKEN_FILE),
        seated.adminToken.secret + "\n",
        0o600,
      );
      const installed = await installAsOnlySnapshot(log, fsm, term);
      snapFile = installed.file;
      report = {
        node: identity.name,
        clusterId: identity.clusterId,
        removed: seated.removed,
        before,
        appliedNow: {
          committed: Math.max(0, Math.min(hard.commit, last) - before.applied),
          uncommitted: Math.max(0, last - Math.max(hard.commit, before.applied)),
        },
        index: installed.index,
        term,
        adminToken: { name: seated.adminToken.name, file: join(dataDir, RECOVERY_TOKEN_FILE) },
      };
    } finally {
      fsm.close();
      await log.close();
    }
    const state = new StateMachine(join(dataDir, "state.db"));
    let vms: number;
    try {
      state.restoreFromFileSync(snapFile, report.index);
      vms = state.vms().length;
    } finally {
      state.close();
    }
    return { ...report, vms, ms: Math.round(performance.now() - t0) };
  } finally {
    removeDb(scratch);
    await unlock();
  }
}

function removeDb(path: string): void {
  for (const s of ["", "-journal", "-wal", "-shm"]) {
    try {
      Deno.removeSync(path + s);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}
