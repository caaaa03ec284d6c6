/**
 * `novactl node start --restore FILE`: a new data dir for a one-node cluster
 * holding the state of a cluster backup (backup_file.ts).
 *
 * The restored cluster is the backed-up cluster come back, not a stranger:
 * - same cluster id, same CA (its key is in the replicated state), so clients'
 *   pinned CAs and `--ca DIR/ca.crt` keep working; the node gets a new key and a
 *   certificate signed by that CA for its (possibly new) address;
 * - same API tokens (hashes are replicated), configuration, images records, VMs,
 *   networks, groups, audit log;
 * - every other member is removed (certificates revoked), so old members rejoin
 *   only with a fresh data dir and a fresh join token; join tokens from the
 *   backup are void; a fresh admin token is written to `DIR/admin.token`.
 *
 * A data dir may keep what this host ran before (`vms/`, `pool/`, `blobs/`,
 * `ovs/`, `ovn/`, the watchdog's files): started with the same `--name`, the node
 * re-adopts the QEMUs still running from `vms/` as a restarted node does, instead
 * of starting them twice. Cluster state there (`node.json`, `raft.db`,
 * `state.db`, `snapshots/`, `tls/`, ...) is refused.
 *
 * @module
 */
import { join } from "node:path";
import { ValidationError } from "../errors/mod.ts";
import { StateMachine } from "../fsm/mod.ts";
import {
  type NodeIdentity,
  SqliteRaftLog,
  TEMP_PREFIX,
  writeFileDurably,
  writeIdentity,
} from "../store/mod.ts";
import { createNodeKeyAndCsr, fingerprint, nodeSans, signCsr, writeNodeTls } from "../pki/mod.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";
import { PEER_CREDENTIAL_PREFIX } from "../cluster/service.ts";
import { type BackupHeader, readBackup } from "./backup_file.ts";
import { installAsOnlySnapshot, seatSoleVoter } from "./sole_voter.ts";

/** Entries of a data dir that hold no cluster state: what a host keeps across a restore. */
const HOST_ENTRIES = new Set([
  "vms",
  "pool",
  "blobs",
  "ovs",
  "ovn",
  "listen.json",
  "watchdog.sock",
  "watchdog.pid",
  "watchdog.log",
  "lost+found",
]);

/**
 * Refuses a data dir holding cluster state (or anything unknown). A missing dir is fine.
 * @throws {ValidationError} (field `data-dir`) naming what is there
 */
export async function assertRestorableDataDir(dataDir: string): Promise<void> {
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dataDir)) {
      if (HOST_ENTRIES.has(e.name) || e.name.startsWith(TEMP_PREFIX)) continue;
      if (e.name.startsWith("ovn.before-recovery-")) continue;
      found.push(e.name);
    }
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw ValidationError.field("data-dir", `cannot read ${dataDir}: ${(err as Error).message}`);
  }
  if (found.length) {
    throw ValidationError.field(
      "data-dir",
      `--restore needs a data dir without cluster state; ${dataDir} holds ${
        found.sort().slice(0, 8).join(", ")
      }`,
    );
  }
}

/** What {@link restoreDataDir} made. */
export interface Restored {
  identity: NodeIdentity;
  backup: BackupHeader;
  removed: string[];
  index: number;
  term: number;
  adminTokenName: string;
  vms: number;
}

/** The file holding the admin token a restore creates (as bootstrap does). */
export const RESTORE_ADMIN_TOKEN_FILE = "admin.token";

/**
 * Builds the data dir of node `name` at `url` from the backup `file`. The backup
 * is verified while its snapshot is extracted; on any failure everything made
 * here is removed again, so the dir is as it was.
 *
 * @throws {ValidationError} a bad backup (field `file`) or data dir (field `data-dir`)
 */
export async function restoreDataDir(opts: {
  dataDir: string;
  file: string;
  name: string;
  url: string;
  now?: number;
}): Promise<Restored> {
  const { dataDir, name, url } = opts;
  const at = opts.now ?? Date.now();
  await assertRestorableDataDir(dataDir);
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  const before = new Set<string>();
  for await (const e of Deno.readDir(dataDir)) before.add(e.name);
  const extracted = join(dataDir, `${TEMP_PREFIX}restore-${crypto.randomUUID()}.snap`);
  try {
    const backup = await readBackup(opts.file, { extractTo: extracted });
    const fsm = new StateMachine(join(dataDir, "state.db"));
    const log = new SqliteRaftLog(join(dataDir, "raft.db"));
    try {
      fsm.restoreFromFileSync(extracted, backup.index);
      const ca = fsm.clusterCa();
      if (!ca) {
        throw ValidationError.field("file", `${opts.file}: its state holds no cluster CA`);
      }
      const sans = nodeSans(new URL(url).hostname.replace(/^\[|\]$/g, ""));
      const { keyPem, csrPem } = await createNodeKeyAndCsr(name, sans);
      const certPem = await signCsr(ca, csrPem, { name, sans });
      const peerCredential = randomToken(PEER_CREDENTIAL_PREFIX, 32);
      const term = backup.term + 1;
      const seated = seatSoleVoter(fsm, backup.index + 1, term, {
        self: name,
        reseat: {
          url,
          fingerprint: fingerprint(certPem),
          credentialHash: sha256Hex(peerCredential),
        },
        action: "cluster.restore",
        detail: `restored ${opts.file} (cluster ${backup.clusterId}, index ${backup.index}, ` +
          `taken ${backup.createdAt} by novactl ${backup.version}) on ${name}`,
        at,
      });
      const installed = await installAsOnlySnapshot(log, fsm, term);
      const vms = fsm.vms().length;
      await writeNodeTls(dataDir, { caPem: ca.certPem, certPem, keyPem });
      await writeFileDurably(
        join(dataDir, RESTORE_ADMIN_TOKEN_FILE),
        seated.adminToken.secret + "\n",
        0o600,
      );
      const identity: NodeIdentity = {
        name,
        clusterId: backup.clusterId,
        url,
        peerCredential,
        createdAt: new Date(at).toISOString(),
      };
      await writeIdentity(dataDir, identity); // last: its presence marks a complete data dir
      return {
        identity,
        backup,
        removed: seated.removed,
        index: installed.index,
        term,
        adminTokenName: seated.adminToken.name,
        vms,
      };
    } finally {
      fsm.close();
      await log.close();
    }
  } catch (err) {
    // Leave the dir as it was: remove everything this restore created.
    for await (const e of Deno.readDir(dataDir)) {
      if (!before.has(e.name)) {
        await Deno.remove(join(dataDir, e.name), { recursive: true }).catch(() => {});
      }
    }
    throw err;
  } finally {
    await Deno.remove(extracted).catch(() => {});
  }
}
