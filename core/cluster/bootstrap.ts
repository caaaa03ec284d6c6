/**
 * Creating a member's data dir: bootstrapping a new cluster or joining one.
 *
 * A new cluster starts from a snapshot at index 1 (term 1) holding its initial
 * state — cluster id, the first voter, the admin token hash, the default
 * configuration — so that every later member, however it catches up,
 * receives the same initial membership and state through InstallSnapshot.
 */
import { join } from "node:path";
import { pathExists, SqliteRaftLog } from "../store/mod.ts";
import { type NodeIdentity, readIdentity, writeFileDurably, writeIdentity } from "../store/mod.ts";
import { type Inventory, StateMachine } from "../fsm/mod.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";
import { NovaError, UnavailableError, ValidationError } from "../errors/mod.ts";
import type { JoinResponse } from "./service.ts";

export const ADMIN_TOKEN_FILE = "admin.token";

/** Refuses to reuse a data dir that holds Raft state but no identity (a half-created dir). */
export async function assertFreshDataDir(dataDir: string): Promise<void> {
  if (await pathExists(join(dataDir, "raft.db"))) {
    throw ValidationError.field(
      "data-dir",
      `${dataDir} holds Raft state but no node.json; remove it or use another directory`,
    );
  }
}

export async function bootstrapCluster(
  dataDir: string,
  name: string,
  url: string,
): Promise<{ identity: NodeIdentity; adminToken: string }> {
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await assertFreshDataDir(dataDir);
  const identity: NodeIdentity = {
    name,
    clusterId: crypto.randomUUID(),
    url,
    clusterSecret: randomToken("", 32),
    createdAt: new Date().toISOString(),
  };
  const adminToken = randomToken("nva_");
  const fsm = new StateMachine(join(dataDir, "state.db"));
  const raftLog = new SqliteRaftLog(join(dataDir, "raft.db"));
  try {
    const init = {
      op: "cluster.init" as const,
      clusterId: identity.clusterId,
      member: { name, url },
      adminTokenHash: sha256Hex(adminToken),
      config: DEFAULT_CONFIG,
      at: Date.now(),
    };
    fsm.applyEntries([{ index: 1, term: 1, type: "normal", data: JSON.stringify(init) }]);
    await raftLog.save({
      snapshot: { meta: { index: 1, term: 1, conf: fsm.confState() }, data: fsm.snapshotData() },
      entries: [],
      hardState: { term: 1, vote: null, commit: 1 },
    });
  } finally {
    fsm.close();
    await raftLog.close();
  }
  await writeFileDurably(join(dataDir, ADMIN_TOKEN_FILE), adminToken + "\n");
  await writeIdentity(dataDir, identity); // last: its presence marks a complete bootstrap
  return { identity, adminToken };
}

export async function joinCluster(opts: {
  dataDir: string;
  name: string;
  url: string;
  joinUrl: string;
  token: string;
  inventory: Inventory;
  labels: Record<string, string>;
}): Promise<NodeIdentity> {
  await Deno.mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  await assertFreshDataDir(opts.dataDir);
  let res: Response;
  try {
    res = await fetch(opts.joinUrl.replace(/\/$/, "") + "/api/v1/cluster/join", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        name: opts.name,
        url: opts.url,
        token: opts.token,
        inventory: opts.inventory,
        labels: opts.labels,
      }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new UnavailableError(`cannot reach ${opts.joinUrl}: ${(err as Error).message}`);
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = body?.error ?? {};
    throw new NovaError(
      e.code ?? "internal",
      `join refused: ${e.message ?? `HTTP ${res.status}`}`,
      e.details,
    );
  }
  const joined = body as JoinResponse;
  const identity: NodeIdentity = {
    name: opts.name,
    clusterId: joined.clusterId,
    url: opts.url,
    clusterSecret: joined.clusterSecret,
    createdAt: new Date().toISOString(),
  };
  await writeIdentity(opts.dataDir, identity);
  return identity;
}

export { readIdentity };
