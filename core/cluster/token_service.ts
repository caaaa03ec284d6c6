/**
 * API tokens offered to the API: secrets are made here, on the node that
 * serves the request, and only their SHA-256 is proposed, so no secret is
 * ever in the Raft log, a snapshot or a peer's memory.
 */
import type { ClusterNode } from "./node.ts";
import type { Role, TokenView } from "../fsm/mod.ts";
import { ValidationError } from "../errors/mod.ts";
import { randomToken, sha256Hex } from "../secrets/mod.ts";

/** API tokens start with this, so a leaked one is recognisable (secret scanners, logs). */
export const API_TOKEN_PREFIX = "nva_";

/** Random bytes in a token's secret (base64url after the prefix). */
export const API_TOKEN_BYTES = 32;

/** Bounds of a token's time to live. */
export const MIN_TOKEN_TTL_MS = 1_000;
export const MAX_TOKEN_TTL_MS = 3650 * 86_400_000;

/** A token just made: its listing plus the secret, shown this once. */
export interface IssuedToken extends TokenView {
  token: string;
}

function expiryOf(ttlMs: number | undefined, at: number): number | null | undefined {
  if (ttlMs === undefined) return undefined;
  if (!Number.isFinite(ttlMs) || ttlMs < MIN_TOKEN_TTL_MS || ttlMs > MAX_TOKEN_TTL_MS) {
    throw ValidationError.field("ttl", "must be between 1s and 3650d");
  }
  return at + ttlMs;
}

/** Creates a token named `name` with `role`, expiring `ttlMs` from now (never when undefined). */
export async function createApiToken(
  node: ClusterNode,
  req: { name: string; role: Role; ttlMs?: number },
  by: string,
): Promise<IssuedToken> {
  const at = Date.now();
  const token = randomToken(API_TOKEN_PREFIX, API_TOKEN_BYTES);
  const view = await node.propose({
    op: "apiToken.create",
    hash: sha256Hex(token),
    name: req.name,
    role: req.role,
    expiresAt: expiryOf(req.ttlMs, at) ?? null,
    by,
    at,
  }) as TokenView;
  return { ...view, token };
}

/** Gives the token `name` a new secret; the old one is refused from now on. */
export async function rotateApiToken(
  node: ClusterNode,
  req: { name: string; ttlMs?: number },
  by: string,
): Promise<IssuedToken> {
  const at = Date.now();
  const token = randomToken(API_TOKEN_PREFIX, API_TOKEN_BYTES);
  const view = await node.propose({
    op: "apiToken.rotate",
    name: req.name,
    hash: sha256Hex(token),
    expiresAt: expiryOf(req.ttlMs, at),
    by,
    at,
  }) as TokenView;
  return { ...view, token };
}

/** Deletes the token `name`. */
export async function revokeApiToken(node: ClusterNode, name: string, by: string): Promise<void> {
  await node.propose({ op: "apiToken.revoke", name, by, at: Date.now() });
}
