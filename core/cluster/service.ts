/** Cluster membership operations offered to the API: join tokens, join, remove, transfer. */
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
import { PEER_SECRET_HEADER } from "../peer/mod.ts";
import { parsePeerCommand } from "../fsm/command_schemas.ts";

/** Names the proposing peer, so fault injection can cut it off like a real partition. */
export const PEER_NAME_HEADER = "x-novactl-peer-name";
import { randomToken, sha256Hex } from "../secrets/mod.ts";

export const JOIN_TOKEN_PREFIX = "nvj_";

export async function createJoinToken(
  node: ClusterNode,
  ttlMs: number,
  by: string,
): Promise<{ token: string; expiresAt: string }> {
  if (ttlMs < 1_000 || ttlMs > 30 * 86_400_000) {
    throw ValidationError.field("ttl", "must be between 1s and 30d");
  }
  const token = randomToken(JOIN_TOKEN_PREFIX);
  const at = Date.now();
  await node.propose({
    op: "joinToken.create",
    id: sha256Hex(token),
    expiresAt: at + ttlMs,
    at,
    by,
  });
  return { token, expiresAt: new Date(at + ttlMs).toISOString() };
}

export interface JoinRequest {
  name: string;
  url: string;
  token: string;
  inventory: Inventory;
  labels: Record<string, string>;
}

export interface JoinResponse {
  clusterId: string;
  clusterSecret: string;
  leader: string;
  members: { name: string; url: string; role: string }[];
}

/**
 * Admits a new member (leader only): the token is consumed through the log
 * (so it is single-use cluster-wide), then the node is added as a learner;
 * the leader promotes it to voter once it has caught up.
 */
export async function admitMember(node: ClusterNode, req: JoinRequest): Promise<JoinResponse> {
  const at = Date.now();
  await node.propose({ op: "joinToken.consume", id: sha256Hex(req.token), node: req.name, at });
  await node.changeMembership({
    type: "addLearner",
    node: req.name,
    context: JSON.stringify({ url: req.url, at }),
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
    clusterSecret: node.identity.clusterSecret,
    leader: node.id,
    members: node.fsm.members(),
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
  const url = node.leaderUrl();
  if (!url || !node.fsm.member(node.id)) throw new UnavailableError("no leader known yet");
  if (node.transport.blocked.has(node.leaderId()!)) {
    throw new UnavailableError("the leader is unreachable (fault injection)");
  }
  const res = await fetch(url + "/internal/propose", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      [PEER_SECRET_HEADER]: node.identity.clusterSecret,
      [PEER_NAME_HEADER]: node.id,
    },
    body: JSON.stringify({ command }),
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
  if (opts.readOwnWrite !== false) await node.waitApplied(body.index, 10_000);
  return body.result;
}
