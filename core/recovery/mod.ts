/**
 * Cluster disaster recovery, at the storage edge (the Raft core is untouched):
 *
 * - `backup_file.ts`: the backup format (header line + state snapshot, SHA-256);
 * - `backup.ts`: a consistent backup taken on the leader, streamed;
 * - `restore.ts`: a new one-node data dir from a backup (`node start --restore`);
 * - `force_new_cluster.ts`: a stopped survivor made sole voter, state kept
 *   (`cluster recover --force-new-cluster`);
 * - `sole_voter.ts`: the rewrite both share (recovery entries applied offline,
 *   folded into the snapshot the node starts from);
 * - `node_lock.ts`: no rewrite while a node runs on the dir, no node start while
 *   a rewrite runs.
 *
 * @module
 */
export * from "./backup_file.ts";
export { type OpenBackup, openClusterBackup } from "./backup.ts";
export { assertRestorableDataDir, type Restored, restoreDataDir } from "./restore.ts";
export { forceNewCluster, RECOVERY_TOKEN_FILE, type RecoveryReport } from "./force_new_cluster.ts";
export {
  assertNodeStopped,
  assertNoRewriteRunning,
  lockForRewrite,
  RECOVER_LOCK_FILE,
} from "./node_lock.ts";
