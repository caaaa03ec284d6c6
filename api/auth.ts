/** Bearer-token authentication and role checks; peer-secret checks for internal routes. */
import type { Context, MiddlewareHandler } from "hono";
import { ForbiddenError, UnauthorizedError } from "../core/errors/mod.ts";
import type { Role } from "../core/fsm/mod.ts";
import { sha256Hex } from "../core/secrets/mod.ts";
import { PEER_SECRET_HEADER, secretsEqual } from "../core/peer/mod.ts";
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Env } from "./context.ts";

const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

/**
 * Authenticates the request's bearer token: sets `principal`, or answers 401
 * for a missing, unknown (never issued, revoked, rotated away) or expired
 * token. Expiry is checked on every request against this node's clock.
 */
export function bearerAuth(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new UnauthorizedError("missing bearer token in Authorization header");
    const found = node.fsm.checkApiToken(sha256Hex(m[1]), Date.now());
    if (!found.ok) {
      throw new UnauthorizedError(
        found.reason === "expired"
          ? `token expired (token "${found.name}" expired at ${found.expiresAt})`
          : "invalid API token",
      );
    }
    c.set("principal", found.principal);
    await next();
  };
}

/**
 * Viewers may read. Operators drive VMs, images, groups, snapshots,
 * migrations, operations and node maintenance (cordon, drain, evacuate).
 * Admins alone change membership (join tokens, member removal, leadership),
 * the configuration and API tokens.
 */
export function requireRole(role: Role): MiddlewareHandler<Env> {
  return async (c, next) => {
    const p = c.get("principal");
    if (RANK[p.role] < RANK[role]) {
      throw new ForbiddenError(`role ${p.role} may not do this; ${role} required`);
    }
    await next();
  };
}

export function peerAuth(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c: Context, next) => {
    const secret = c.req.header(PEER_SECRET_HEADER) ?? "";
    if (!secretsEqual(secret, node.identity.clusterSecret)) {
      throw new UnauthorizedError("invalid peer secret");
    }
    await next();
  };
}
