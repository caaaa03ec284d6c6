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
import { PROGRAM_MAX_LEVEL } from "../upgrade/mod.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";
import {
  codeOfHttpStatus,
  type ErrorCode,
  NovaError,
  TimeoutError,
  UnavailableError,
  ValidationError,
} from "../errors/mod.ts";
import { type JoinResponse, PEER_CREDENTIAL_PREFIX } from "./service.ts";
import {
  certInfo,
  createCa,
  createNodeKeyAndCsr,
  fingerprint,
  nodeSans,
  parseJoinToken,
  signCsr,
  verifyCert,
  writeNodeTls,
} from "../pki/mod.ts";
import { get as httpsGet } from "node:https";
import { get as httpGet } from "node:http";

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

/** The host part of a node URL (its certificate's SAN). */
function hostOf(url: string): string {
  return new URL(url).hostname.replace(/^\[|\]$/g, "");
}

/**
 * Creates a new one-node cluster in `dataDir`: the cluster CA, this node's key
 * and certificate (signed by that CA), the admin token, and the initial state.
 * `DIR/ca.crt` is what clients pass as `--ca`.
 */
export async function bootstrapCluster(
  dataDir: string,
  name: string,
  url: string,
  /** The level it starts at: this program's; tests model a cluster an older release made. */
  startLevel: number = PROGRAM_MAX_LEVEL,
): Promise<{ identity: NodeIdentity; adminToken: string }> {
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await assertFreshDataDir(dataDir);
  const clusterId = crypto.randomUUID();
  const ca = await createCa(clusterId);
  const sans = nodeSans(hostOf(url));
  const { keyPem, csrPem } = await createNodeKeyAndCsr(name, sans);
  const certPem = await signCsr(ca, csrPem, { name, sans });
  const identity: NodeIdentity = {
    name,
    clusterId,
    url,
    peerCredential: randomToken(PEER_CREDENTIAL_PREFIX, 32),
    createdAt: new Date().toISOString(),
  };
  const adminToken = randomToken("nva_");
  const fsm = new StateMachine(join(dataDir, "state.db"));
  const raftLog = new SqliteRaftLog(join(dataDir, "raft.db"));
  try {
    const init = {
      op: "cluster.init" as const,
      clusterId: identity.clusterId,
      member: {
        name,
        url,
        fingerprint: fingerprint(certPem),
        credentialHash: sha256Hex(identity.peerCredential),
      },
      adminTokenHash: sha256Hex(adminToken),
      config: DEFAULT_CONFIG,
      ca,
      at: Date.now(),
    };
    // Its only member runs this program: the cluster starts at this program's level, so a
    // VM created in its first second does not run as an older release's would.
    const level = { op: "cluster.upgrade" as const, level: startLevel, at: init.at };
    const entries = startLevel > 1 ? [init, level] : [init];
    fsm.applyEntries(
      entries.map((c, i) => ({ index: i + 1, term: 1, type: "normal", data: JSON.stringify(c) })),
    );
    const meta = { index: entries.length, term: 1, conf: fsm.confState() };
    await raftLog.save({
      snapshot: { meta, data: fsm.snapshotData() },
      entries: [],
      hardState: { term: 1, vote: null, commit: meta.index },
    });
  } finally {
    fsm.close();
    await raftLog.close();
  }
  await writeNodeTls(dataDir, { caPem: ca.certPem, certPem, keyPem });
  await writeFileDurably(join(dataDir, ADMIN_TOKEN_FILE), adminToken + "\n");
  await writeIdentity(dataDir, identity); // last: its presence marks a complete bootstrap
  return { identity, adminToken };
}

/** Largest CA certificate a joiner accepts from the cluster it is about to verify. */
const MAX_CA_PEM_BYTES = 16 << 10;

/**
 * Fetches the CA certificate a cluster presents, without trusting it: the
 * caller compares its fingerprint with the one in the join token before using it.
 */
export async function fetchUntrustedCa(joinUrl: string): Promise<string> {
  const url = new URL(joinUrl.replace(/\/$/, "") + CA_ROUTE);
  const get = url.protocol === "https:" ? httpsGet : httpGet;
  return await new Promise<string>((resolve, reject) => {
    const req = get(url, { rejectUnauthorized: false, timeout: 15_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
        if (text.length > MAX_CA_PEM_BYTES) req.destroy(new Error("CA certificate too large"));
      });
      res.on("end", () => {
        if (res.statusCode !== 200) reject(new Error(`GET ${CA_ROUTE}: HTTP ${res.statusCode}`));
        else resolve(text);
      });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timed out")));
    req.on("error", reject);
  }).catch((err) => {
    throw new UnavailableError(`cannot reach ${joinUrl}: ${(err as Error).message}`);
  });
}

/**
 * Answers that say the cluster did not act on the join and may on a later try:
 * unreachable (joins under load meet refused connections), no leader, a leader
 * change that dropped the proposal, a full queue. The join
 * token is consumed only in the committed entry, so trying again is safe.
 * A timeout is not among them: the join may have committed.
 */
const JOIN_RETRYABLE = new Set(["unavailable", "no_quorum", "not_leader"]);
/** Tries of a join the cluster refused as retryable, with 0.5, 1, 2, 4 s between them. */
export const JOIN_ATTEMPTS = 5;

/**
 * Runs one step of a join (fetching the CA, posting the request), trying again
 * while the cluster is unreachable or answers that it could not act on it yet.
 *
 * @throws {NovaError} the cluster's own refusal, typed by its code
 */
async function retriedWhileRetryable<T>(step: () => Promise<T>, backoffMs = 500): Promise<T> {
  for (let attempt = 1;; attempt++) {
    try {
      return await step();
    } catch (err) {
      if (!(err instanceof NovaError) || !JOIN_RETRYABLE.has(err.code)) throw err;
      if (attempt >= JOIN_ATTEMPTS) throw err;
      await new Promise((r) => setTimeout(r, backoffMs * 2 ** (attempt - 1)));
    }
  }
}

async function postJoin(
  joinUrl: string,
  caPem: string,
  request: Record<string, unknown>,
): Promise<JoinResponse> {
  const client = Deno.createHttpClient({ caCerts: [caPem] });
  try {
    let res: Response;
    try {
      res = await fetch(joinUrl.replace(/\/$/, "") + "/api/v1/cluster/join", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(request),
        signal: AbortSignal.timeout(30_000),
        client,
      });
    } catch (err) {
      if ((err as Error).name === "TimeoutError") {
        throw new TimeoutError(`join request to ${joinUrl} (it may have been accepted)`);
      }
      throw new UnavailableError(`cannot reach ${joinUrl}: ${(err as Error).message}`);
    }
    const body = await res.json().catch(() => ({}));
    if (res.ok) return body as JoinResponse;
    const e = body?.error ?? {};
    const code: ErrorCode = e.code ?? codeOfHttpStatus(res.status);
    const message = `join refused: ${e.message ?? `HTTP ${res.status}`}`;
    throw code === "unavailable"
      ? new UnavailableError(message)
      : new NovaError(code, message, e.details);
  } finally {
    client.close();
  }
}

/** The public route serving the cluster CA certificate (PEM). */
export const CA_ROUTE = "/api/v1/cluster/ca";

/**
 * Joins an existing cluster: verifies the cluster's CA against the fingerprint in
 * the join token, then sends a CSR (with the CA pinned) and stores the certificate
 * the leader signed.
 */
export async function joinCluster(opts: {
  dataDir: string;
  name: string;
  url: string;
  joinUrl: string;
  token: string;
  inventory: Inventory;
  labels: Record<string, string>;
}): Promise<NodeIdentity> {
  const token = parseJoinToken(opts.token);
  await Deno.mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  await assertFreshDataDir(opts.dataDir);
  const caPem = await retriedWhileRetryable(() => fetchUntrustedCa(opts.joinUrl));
  let presented: string;
  try {
    presented = fingerprint(caPem);
  } catch {
    throw new ValidationError(`${opts.joinUrl} did not serve a CA certificate`);
  }
  if (presented !== token.caFingerprint) {
    throw ValidationError.field(
      "token",
      `the cluster at ${opts.joinUrl} presents CA fingerprint ${presented}, but the join token ` +
        `pins ${token.caFingerprint}: wrong cluster, or someone in between; not joining`,
    );
  }
  const sans = nodeSans(hostOf(opts.url));
  const { keyPem, csrPem } = await createNodeKeyAndCsr(opts.name, sans);
  const request = {
    name: opts.name,
    url: opts.url,
    token: opts.token,
    csr: csrPem,
    inventory: opts.inventory,
    labels: opts.labels,
  };
  const joined = await retriedWhileRetryable(() => postJoin(opts.joinUrl, caPem, request));
  if (
    !(await verifyCert(joined.certPem, caPem)) || certInfo(joined.certPem).commonName !== opts.name
  ) {
    throw new NovaError(
      "internal",
      "join answered with a certificate the pinned CA did not sign for this node",
    );
  }
  await writeNodeTls(opts.dataDir, { caPem, certPem: joined.certPem, keyPem });
  const identity: NodeIdentity = {
    name: opts.name,
    clusterId: joined.clusterId,
    url: opts.url,
    peerCredential: joined.peerCredential,
    joinedWith: joined.trustedPeers,
    createdAt: new Date().toISOString(),
  };
  await writeIdentity(opts.dataDir, identity);
  return identity;
}

export { readIdentity };
