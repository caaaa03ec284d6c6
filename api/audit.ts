/**
 * The audit middleware: every mutating request under /api/v1 (POST, PUT,
 * PATCH, DELETE), answered or refused (400, 401, 403, 409, ...), becomes one
 * audit record: principal (the token's name, "anonymous" without a valid
 * one), role, client address, request id, method, route pattern and path,
 * target resource, status and duration. Every /api/v1 response carries its
 * `x-request-id`.
 *
 * A request forwarded to another member (the leader, a VM's host) is recorded
 * once, by the member that answers it: that member sees the client's address
 * and request id in the forwarding headers (trusted only from an
 * authenticated peer, api/remote.ts) and marks its answer
 * {@link AUDITED_HEADER}; the forwarding node then records nothing and strips
 * the mark. When the forward itself fails (no leader), the forwarding node
 * records the failure.
 */
import type { Context, MiddlewareHandler } from "hono";
import { auditBufferOf, type ClusterNode } from "../core/cluster/mod.ts";
import type { Env } from "./context.ts";
import { readUpTo } from "../core/store/mod.ts";
import { remoteAddress, REQUEST_ID_HEADER, requestIdOf, viaOf } from "./remote.ts";
import { runForRequest } from "../core/log/mod.ts";
import { parsedBodyOf } from "./validate.ts";

/** Set by the member that recorded a forwarded request, for the forwarding node. */
export const AUDITED_HEADER = "x-novactl-audited";

const MUTATING = new Set(["POST", "PUT", "PATCH", "DELETE"]);
/** Bodies up to this size are peeked at for the target's name (`POST /vms {"name": ...}`). */
const MAX_PEEK_BYTES = 64 << 10;

/**
 * How long the answer waits for the body copy before the record names the target by its
 * kind alone: a refused client may never finish sending. The wait matters only when the
 * handler did not read the body (a 401/403): `Deno.serve` drops an unread body once the
 * answer is sent, so the copy must be read first. A body that came with its headers is
 * read in microseconds.
 */
const PEEK_WAIT_MS = 250;

/** Plural path segments and the resource kind they hold. */
const KINDS: Record<string, string> = {
  vms: "vm",
  nodes: "node",
  images: "image",
  blobs: "blob",
  groups: "group",
  operations: "operation",
  tokens: "token",
  networks: "network",
  "security-groups": "securityGroup",
  routers: "router",
  "floating-ips": "floatingIp",
  pools: "pool",
  volumes: "volume",
  backups: "backup",
  "backup-targets": "backupTarget",
  "backup-schedules": "backupSchedule",
};

/** Records mutating /api/v1 requests (mount on `/api/v1/*`) and answers their request id. */
export function auditRequests(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c, next) => {
    c.set("node", node);
    const requestId = requestIdOf(c);
    c.set("requestId", requestId);
    if (!MUTATING.has(c.req.method)) {
      await runForRequest(requestId, next);
      setHeader(c, REQUEST_ID_HEADER, requestId);
      return;
    }
    const t0 = performance.now();
    await runForRequest(requestId, next);
    const ms = Math.round(performance.now() - t0);
    if (c.res.headers.get(AUDITED_HEADER)) {
      c.res.headers.delete(AUDITED_HEADER); // the member we forwarded to recorded it
    } else {
      const principal = c.get("principal");
      const record = {
        at: Date.now(),
        principal: principal?.name ?? "anonymous",
        role: principal?.role ?? null,
        source: remoteAddress(c),
        node: node.id,
        requestId,
        method: c.req.method,
        route: routePattern(c),
        path: c.req.path,
        code: c.res.status,
        ms,
        // Requests through the gRPC API name their RPC.
        detail: viaOf(c),
      };
      const parsed = parsedBodyOf(c.req.raw);
      const b = parsed !== undefined ? parsed : await settled(peekUnread(c), PEEK_WAIT_MS);
      auditBufferOf(node).record({ ...record, resource: resourceOf(record.path, b) });
      if (c.get("peer")) setHeader(c, AUDITED_HEADER, node.id);
    }
    setHeader(c, REQUEST_ID_HEADER, requestId);
  };
}

/**
 * The target as `kind/name`: from the path (`/vms/web1/start` → `vm/web1`),
 * else from the body's `name` (`POST /vms`) or, for a backup, its `vm`, else the kind alone.
 */
export function resourceOf(path: string, body: unknown): string | null {
  const segs = path.replace(/^\/api\/v1\/?/, "").split("/").filter(Boolean).map(decode);
  if (!segs.length) return null;
  const [top, id, sub] = segs;
  const bodyName = body && typeof body === "object" &&
      typeof (body as { name?: unknown }).name === "string"
    ? (body as { name: string }).name
    : undefined;
  if (top === "cluster") {
    if (id === "members" && sub) return `node/${sub}`;
    if (id === "join" && bodyName) return `node/${bodyName}`;
    if (id === "tokens") return "joinToken";
    return "cluster";
  }
  if (top === "config") return id && id !== "rollback" ? `config/${id}` : "config";
  // `POST /backups {vm}` backs a VM up: recorded against the VM (`audit list --resource vm/web1`).
  if (top === "backups" && !id && typeof (body as { vm?: unknown } | null)?.vm === "string") {
    return `vm/${(body as { vm: string }).vm}`;
  }
  // `/alerts/rules/NAME` (and `POST /alerts/rules {name}`) is the alert rule NAME.
  if (top === "alerts" && id === "rules") {
    const rule = sub ?? bodyName;
    return rule ? `alertRule/${rule}` : "alertRule";
  }
  const kind = KINDS[top] ?? top;
  const name = id ?? bodyName;
  return name ? `${kind}/${name}` : kind;
}

/** The pattern of the route that answered (`/api/v1/vms/:name/start`), whatever ran. */
function routePattern(c: Context<Env>): string {
  const routes = c.req.matchedRoutes;
  for (let i = routes.length - 1; i >= 0; i--) {
    if (routes[i].method !== "ALL") return routes[i].path;
  }
  return "unmatched";
}

/**
 * The JSON body of a request its handler did not read (refused before it: a 401, a 403),
 * read once the answer is ready and before it is sent, only when the path does not already
 * name the target. Large or unsized bodies (uploads) are never read. A handler that read
 * the body left its parse (api/validate.ts), which the record uses instead.
 */
function peekUnread(c: Context<Env>): Promise<unknown> {
  const segs = c.req.path.replace(/^\/api\/v1\/?/, "").split("/").filter(Boolean);
  const named = segs.length >= 2 && !(segs[0] === "cluster" && segs[1] === "join");
  const size = Number(c.req.header("content-length") ?? 0);
  const json = (c.req.header("content-type") ?? "").includes("json");
  const body = c.req.raw.body;
  if (named || !json || size > MAX_PEEK_BYTES || !body || c.req.raw.bodyUsed) {
    return Promise.resolve(null);
  }
  return readSmall(body).catch(() => null);
}

/** The stream as JSON if it ends within MAX_PEEK_BYTES; else null (and it is cancelled). */
async function readSmall(body: ReadableStream<Uint8Array>): Promise<unknown> {
  const bytes = await readUpTo(body, MAX_PEEK_BYTES);
  return bytes && JSON.parse(new TextDecoder().decode(bytes));
}

/** `p`'s value, or null once `ms` passed first. */
function settled<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => timer = setTimeout(() => r(null), ms));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

function decode(seg: string): string {
  try {
    return decodeURIComponent(seg);
  } catch {
    return seg;
  }
}

/** Sets a response header, copying the response first when its headers are immutable. */
function setHeader(c: Context<Env>, name: string, value: string): void {
  try {
    c.res.headers.set(name, value);
  } catch {
    const res = new Response(c.res.body, c.res);
    res.headers.set(name, value);
    c.res = res;
  }
}
