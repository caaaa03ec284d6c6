/** Bearer-token authentication and role checks; peer identity for internal routes. */
import type { Context, MiddlewareHandler } from "hono";
import { Buffer } from "node:buffer";
import { timingSafeEqual } from "node:crypto";
import { ForbiddenError, NovaError, UnauthorizedError } from "../core/errors/mod.ts";
import type { Role } from "../core/fsm/mod.ts";
import { sha256Hex } from "../core/secrets/mod.ts";
import { parsePeerCredential, PEER_CREDENTIAL_HEADER } from "../core/peer/mod.ts";
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Env, Principal } from "./context.ts";
import type { ServerBindings } from "./server.ts";

const RANK: Record<Role, number> = { viewer: 1, operator: 2, admin: 3 };

/** The middlewares below, so the OpenAPI document can tell which routes they guard. */
const ROLE_OF = new WeakMap<object, Role>();
const BEARER = new WeakSet<object>();

/** The role a middleware made by {@link requireRole} demands; undefined for any other. */
export function requiredRoleOf(handler: unknown): Role | undefined {
  return typeof handler === "function" ? ROLE_OF.get(handler) : undefined;
}

/** Whether `handler` is a middleware made by {@link bearerAuth}. */
export function isBearerAuth(handler: unknown): boolean {
  return typeof handler === "function" && BEARER.has(handler);
}

/** How {@link bearerAuth} may find the token besides the Authorization header. */
export interface BearerOptions {
  /**
   * Also take a GET request's token from `?token=`, for the browser's EventSource and
   * WebSocket, which cannot set headers. The access log and audit records leave the query
   * string out (api/access_log.ts, api/audit.ts), so the token is not written down. The
   * token is kept in the context (`token`) for a WebSocket relayed to another node.
   */
  queryToken?: boolean;
}

/**
 * Authenticates the request's bearer token: sets `principal`, or answers 401
 * for a missing, unknown (never issued, revoked, rotated away) or expired
 * token. Expiry is checked on every request against this node's clock.
 */
export function bearerAuth(
  node: ClusterNode,
  options: BearerOptions = {},
): MiddlewareHandler<Env> {
  const mw: MiddlewareHandler<Env> = async (c, next) => {
    const header = c.req.header("authorization");
    // A sent header decides alone: a wrong one is not rescued by a query token.
    let token = header === undefined ? undefined : /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    if (header === undefined && options.queryToken && c.req.method === "GET") {
      token = c.req.query("token") || undefined;
    }
    if (!token) {
      throw new UnauthorizedError(
        options.queryToken
          ? "missing bearer token (Authorization header or ?token=)"
          : "missing bearer token in Authorization header",
      );
    }
    c.set("principal", principalOf(node, token));
    if (options.queryToken) c.set("token", token);
    await next();
  };
  BEARER.add(mw);
  return mw;
}

/** The principal of API token `token`; 401 for one never issued, revoked or expired. */
function principalOf(node: ClusterNode, token: string): Principal {
  const found = node.fsm.checkApiToken(sha256Hex(token), Date.now());
  if (!found.ok) {
    throw new UnauthorizedError(
      found.reason === "expired"
        ? `token expired (token "${found.name}" expired at ${found.expiresAt})`
        : "invalid API token",
    );
  }
  return found.principal;
}

/** Whether `p` has role `role` or a higher one. */
export function hasRole(p: Principal, role: Role): boolean {
  return RANK[p.role] >= RANK[role];
}

/**
 * Viewers may read. Operators drive VMs, images, groups, snapshots,
 * migrations, operations and node maintenance (cordon, drain, evacuate).
 * Admins alone change membership (join tokens, member removal, leadership),
 * the configuration and API tokens.
 */
export function requireRole(role: Role): MiddlewareHandler<Env> {
  const mw: MiddlewareHandler<Env> = async (c, next) => {
    const p = c.get("principal");
    if (!hasRole(p, role)) {
      throw new ForbiddenError(`role ${p.role} may not do this; ${role} required`);
    }
    await next();
  };
  ROLE_OF.set(mw, role);
  return mw;
}

/** How a peer request authenticated, or why it did not. */
export type PeerVerdict =
  | { peer: string }
  | { revoked: string }
  | { refused: string };

/**
 * Who a request comes from, as far as cluster membership goes. A signed peer
 * request (api/server.ts, core/peer/signature.ts) identifies member X only when
 * all hold: its signature verifies with a certificate chained to the cluster CA
 * (`authorized`: also fresh and not replayed), its CN is X, X is a current member, and its
 * fingerprint equals the one recorded for X at join — so neither the CA key nor
 * a certificate for another name is enough. A revoked fingerprint (a removed
 * member) is reported as such, so its Raft traffic learns it was removed (410).
 * On a plain-HTTP loopback listener a node's own credential stands in for the
 * certificate (its hash is in the member record).
 */
export function identifyPeer(
  node: ClusterNode,
  bindings: ServerBindings | undefined,
  credentialHeader: string | undefined,
): PeerVerdict {
  const known = (name: string) =>
    node.fsm.memberCert(name) ??
      // A joiner's state is empty until its first snapshot: it trusts the members it joined.
      (node.fsm.memberCerts().length === 0
        ? node.identity.joinedWith?.find((m) => m.name === name) ?? null
        : null);
  const tls = bindings?.tlsPeer;
  if (tls) {
    if (!tls.authorized) return { refused: tls.problem ?? "peer certificate not trusted" };
    const revokedName = node.fsm.revokedCert(tls.fingerprint);
    if (revokedName !== null) return { revoked: revokedName };
    const name = tls.commonName ?? "";
    const record = known(name);
    if (!record) return { refused: `"${name}" is not a member of this cluster` };
    if (!record.fingerprint || !hashesEqual(record.fingerprint, tls.fingerprint)) {
      return { refused: `certificate is not the one recorded for member "${name}"` };
    }
    return { peer: name };
  }
  if (bindings?.insecure && credentialHeader) {
    const cred = parsePeerCredential(credentialHeader);
    const record = cred ? known(cred.name) : null;
    if (!cred || !record?.credentialHash) return { refused: "unknown peer credential" };
    if (!hashesEqual(record.credentialHash, sha256Hex(cred.secret))) {
      return { refused: `credential is not the one recorded for member "${cred.name}"` };
    }
    return { peer: cred.name };
  }
  return { refused: "peer routes need a request signed by a member" };
}

function hashesEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The client's address as text. Our listener (api/server.ts) passes it so; a handler served by
 * `Deno.serve` itself (tests, tools) gets Deno's `NetAddr`, which audit records would refuse.
 */
export function addressText(addr: unknown): string {
  if (typeof addr === "string") return addr;
  const host = (addr as { hostname?: unknown } | null | undefined)?.hostname;
  return typeof host === "string" ? host : "";
}

/** Sets `peer` (and `remoteAddr`) for every request; refuses nothing by itself. */
export function peerIdentity(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c, next) => {
    const bindings = c.env as ServerBindings | undefined;
    c.set("remoteAddr", addressText(bindings?.remoteAddr));
    if (bindings?.tlsPeer || bindings?.insecure) {
      const verdict = identifyPeer(node, bindings, c.req.header(PEER_CREDENTIAL_HEADER));
      if ("peer" in verdict) c.set("peer", verdict.peer);
    }
    await next();
  };
}

/**
 * Internal routes: only a current member's authenticated node. A removed member
 * gets 410, which tells it to stop; anyone else 403.
 */
export function peerAuth(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c: Context<Env>, next) => {
    c.set("peer", authenticatedPeer(node, c));
    await next();
  };
}

/**
 * The current member the request comes from (see {@link identifyPeer}); a Raft stream
 * asks again for each frame, as membership may change while it is open.
 * @throws NovaError "removed" (410) for a revoked member, ForbiddenError for anyone else
 */
export function authenticatedPeer(node: ClusterNode, c: Context<Env>): string {
  const verdict = identifyPeer(
    node,
    c.env as ServerBindings | undefined,
    c.req.header(PEER_CREDENTIAL_HEADER),
  );
  if ("revoked" in verdict) {
    throw new NovaError("removed", `${verdict.revoked} was removed from this cluster`);
  }
  if ("refused" in verdict) throw new ForbiddenError(verdict.refused);
  return verdict.peer;
}

/**
 * The member named by a peer request (an envelope's `from`, a lease's `node`, ...)
 * must be the authenticated peer: a member cannot speak for another.
 *
 * @throws {ForbiddenError} otherwise
 */
export function assertSender(c: Context<Env>, claimed: unknown, field: string): void {
  const peer = c.get("peer");
  if (!peer || claimed !== peer) {
    throw new ForbiddenError(
      `${field} "${String(claimed)}" is not the authenticated peer "${peer}"`,
    );
  }
}
