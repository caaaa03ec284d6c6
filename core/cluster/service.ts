/** Cluster membership operations offered to the API: join tokens, join, remove, transfer. */
import { admitting, assertJoinerSupported } from "../upgrade/mod.ts";
import type { ClusterNode } from "./node.ts";
import type { Command, Inventory } from "../fsm/mod.ts";
import {
  codeOfHttpStatus,
  NotFoundError,
  NovaError,
  OverloadedError,
  UnavailableError,
  ValidationError,
} from "../errors/mod.ts";
import { parsePeerCommand } from "../fsm/command_schemas.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";
import {
  fingerprint,
  formatJoinToken,
  JOIN_TOKEN_PREFIX,
  nodeSans,
  parseJoinToken,
  signCsr,
} from "../pki/mod.ts";

export { JOIN_TOKEN_PREFIX };
/** Prefix of a node's own peer credential (plain-HTTP loopback mode). */
export const PEER_CREDENTIAL_PREFIX = "nvp_";

/** The cluster CA certificate (PEM) every member holds: what joiners and clients pin. */
export function caPemOf(node: ClusterNode): string {
  const pem = node.tls?.caPem ?? node.fsm.clusterCa()?.certPem;
  if (!pem) throw new UnavailableError("this node has no cluster CA");
  return pem;
}

export async function createJoinToken(
  node: ClusterNode,
  ttlMs: number,
  by: string,
): Promise<{ token: string; expiresAt: string }> {
  if (ttlMs < 1_000 || ttlMs > 30 * 86_400_000) {
    throw ValidationError.field("ttl", "must be between 1s and 30d");
  }
  const secret = randomToken(JOIN_TOKEN_PREFIX);
  const at = Date.now();
  await node.propose({
    op: "joinToken.create",
    id: sha256Hex(secret),
    expiresAt: at + ttlMs,
    at,
    by,
  });
  // The joiner checks the cluster it reaches against this fingerprint before trusting it.
  const token = formatJoinToken(secret, fingerprint(caPemOf(node)));
  return { token, expiresAt: new Date(at + ttlMs).toISOString() };
}

export interface JoinRequest {
  name: string;
  url: string;
  token: string;
  /** PEM PKCS#10 request for the joiner's key, CN = its name. */
  csr: string;
  inventory: Inventory;
  labels: Record<string, string>;
}

export interface JoinResponse {
  clusterId: string;
  leader: string;
  members: { name: string; url: string; role: string }[];
  /** The joiner's certificate, signed by the cluster CA. */
  certPem: string;
  caPem: string;
  /** The joiner's own peer credential (plain-HTTP mode); the cluster keeps only its hash. */
  peerCredential: string;
  /** Identities of the current members, trusted until the joiner's state lists them. */
  trustedPeers: { name: string; fingerprint: string; credentialHash: string }[];
}

/**
 * Admits a new member (leader only): the token is consumed through the log
 * (so it is single-use cluster-wide), then the node is added as a learner;
 * the leader promotes it to voter once it has caught up.
 */
export function admitMember(node: ClusterNode, req: JoinRequest): Promise<JoinResponse> {
  // Checked against the level and added with no upgrade in between (core/upgrade/).
  return admitting(() => admit(node, req));
}

async function admit(node: ClusterNode, req: JoinRequest): Promise<JoinResponse> {
  let secret: string;
  try {
    secret = parseJoinToken(req.token).secret;
  } catch {
    throw new NovaError("unauthorized", "join token is not valid for this cluster");
  }
  const ca = node.fsm.clusterCa();
  if (!ca) throw new UnavailableError("the cluster CA is not in this leader's state");
  const at = Date.now();
  // The token first (through the log, so it is single-use cluster-wide): nobody without
  // one makes the leader verify or sign anything. A bad CSR then costs the token.
  await node.propose({ op: "joinToken.consume", id: sha256Hex(secret), node: req.name, at });
  // After the token (callers without one learn nothing): an older release could not apply
  // this cluster's entries. The token is spent; the upgraded joiner needs a new one.
  assertJoinerSupported(req.name, req.inventory.version, node.fsm.clusterLevel());
  const sans = nodeSans(new URL(req.url).hostname);
  const certPem = await signCsr(ca, req.csr, { name: req.name, sans });
  const peerCredential = randomToken(PEER_CREDENTIAL_PREFIX, 32);
  await node.changeMembership({
    type: "addLearner",
    node: req.name,
    context: JSON.stringify({
      url: req.url,
      at,
      fingerprint: fingerprint(certPem),
      credentialHash: sha256Hex(peerCredential),
    }),
  });
  await node.propose({
    op: "node.upsert",
    name: req.name,
    url: req.url,
    inventory: req.inventory,
    labels: req.labels,
    at: Date.now(),
  });
  return {
    clusterId: node.identity.clusterId,
    leader: node.id,
    members: node.fsm.members(),
    certPem,
    caPem: ca.certPem,
    peerCredential,
    trustedPeers: node.fsm.memberCerts().filter((m) => m.name !== req.name),
  };
}

export async function removeMember(node: ClusterNode, name: string): Promise<void> {
  const member = node.fsm.member(name);
  if (!member) throw new NotFoundError("member", name);
  const conf = node.fsm.confState();
  if (member.role === "voter" && conf.voters.length === 1) {
    throw ValidationError.field("name", "cannot remove the last voter of the cluster");
  }
  if (name === node.id) {
    // A leader cannot safely drive its own removal to completion; hand over first.
    await node.handOffLeadership();
    if (node.isLeader()) {
      throw ValidationError.field("name", "cannot remove the leader: no other voter can take over");
    }
    throw new NotLeaderRetry();
  }
  await node.changeMembership({ type: "remove", node: name });
}

/** Thrown after the leader handed over so the API re-forwards the request to the new leader. */
export class NotLeaderRetry extends Error {
  constructor() {
    super("leadership moved; retry on the new leader");
  }
}

export async function transferLeader(node: ClusterNode, to: string): Promise<void> {
  const member = node.fsm.member(to);
  if (!member) throw new NotFoundError("member", to);
  if (member.role !== "voter") {
    throw ValidationError.field("name", `${to} is a learner, not a voter`);
  }
  if (to === node.id) return;
  await node.transferLeadership(to);
}

/**
 * Proposes locally when leading, otherwise asks the leader over the peer
 * channel, and returns once this node applied the command too: the caller
 * then reads its own write from the local state.
 */
export async function submitToLeader(
  node: ClusterNode,
  command: Command,
  opts: { readOwnWrite?: boolean } = {},
): Promise<unknown> {
  // The same checks a peer's report meets at /internal/propose, so a leader's own host cannot skip them.
  if (node.isLeader()) return await node.propose(parsePeerCommand(command));
  const body = await postToLeader(node, { command }) as { result: unknown; index: number };
  if (opts.readOwnWrite !== false) await node.waitApplied(body.index, 10_000);
  return body.result;
}

/**
 * POSTs `payload` (`{command}` or `{commands}`) to the leader's `/internal/propose` and
 * returns its answer; a refusal becomes the matching error.
 */
export async function postToLeader(node: ClusterNode, payload: unknown): Promise<unknown> {
  const url = node.leaderUrl();
  if (!url || !node.fsm.member(node.id)) throw new UnavailableError("no leader known yet");
  if (node.transport.blocked.has(node.leaderId()!)) {
    throw new UnavailableError("the leader is unreachable (fault injection)");
  }
  const res = await node.peerHttp.fetch(url + "/internal/propose", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(payload),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await res.json();
  if (!res.ok) {
    const message = body?.error?.message ?? `HTTP ${res.status}`;
    const retryAfter = res.headers.get("retry-after");
    // The leader's back-pressure reaches the caller intact (503 + Retry-After).
    if (res.status === 503 && retryAfter) throw new OverloadedError(message, Number(retryAfter));
    throw new NovaError(codeOfHttpStatus(res.status), message);
  }
  return body;
}
