/**
 * Taking a cluster backup on the leader (`POST /api/v1/cluster/backup`).
 *
 * A ReadIndex round first, so the backup holds every write committed before the
 * request; then the state machine writes a snapshot file from one SQLite read
 * transaction (a consistent view at one applied index; applying goes on
 * meanwhile), which is hashed once and streamed out behind its header. The file
 * is a temporary snapshot file of the Raft log's directory (swept at start if a
 * crash leaves it) and removed once the stream ends or the client goes away.
 *
 * @module
 */
import type { ClusterNode } from "../cluster/node.ts";
import { NovaError } from "../errors/mod.ts";
import { VERSION } from "../version.ts";
import { BACKUP_FORMAT, BACKUP_KIND, type BackupHeader, backupStream } from "./backup_file.ts";
import { describeSnapshot } from "./backup_file.ts";

/** A backup ready to be sent: its header and the bytes (header line included). */
export interface OpenBackup {
  header: BackupHeader;
  body: ReadableStream<Uint8Array>;
}

/**
 * Writes a snapshot of the replicated state and opens it as a backup stream.
 * The caller must be the leader and should have confirmed it (linearizableRead).
 */
export async function openClusterBackup(node: ClusterNode): Promise<OpenBackup> {
  const path = node.log.tempSnapshotPath();
  const remove = () => void Deno.remove(path).catch(() => {});
  try {
    const snap = await node.fsm.snapshotToFile(path);
    const described = await describeSnapshot(path);
    const clusterId = node.fsm.clusterId();
    if (!clusterId) throw new NovaError("unavailable", "this node holds no cluster state yet");
    const header: BackupHeader = {
      kind: BACKUP_KIND,
      format: BACKUP_FORMAT,
      clusterId,
      index: snap.index,
      term: termOf(node, snap.index),
      members: described.members,
      createdAt: new Date().toISOString(),
      version: VERSION,
      bytes: described.bytes,
      sha256: described.sha256,
    };
    return { header, body: backupStream(header, path, remove) };
  } catch (err) {
    remove();
    throw err;
  }
}

/** The term of the entry at `index` (the snapshot's term if compacted into it). */
function termOf(node: ClusterNode, index: number): number {
  try {
    return node.log.term(index);
  } catch {
    return node.raft.basicStatus().term;
  }
}
