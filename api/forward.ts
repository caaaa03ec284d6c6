/**
 * Any node accepts any request: requests that need the leader (writes and
 * linearizable reads) are proxied to it unchanged, once. A forwarded request
 * that lands on a non-leader (leadership moved meanwhile) gets 503.
 *
 * Forwarding uses the node's peer client (TLS, signed requests), so a user's bearer token
 * never crosses between nodes in clear text, and the receiver knows the
 * forwarder as a member (`peer`); it then trusts `x-novactl-forwarded-for`,
 * the original client's address.
 */
import type { Context, MiddlewareHandler } from "hono";
import {
  ConflictError,
  NoQuorumError,
  NotFoundError,
  NotLeaderError,
  UnavailableError,
} from "../core/errors/mod.ts";
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Env } from "./context.ts";
import { forwardingHeaders } from "./remote.ts";

export const FORWARDED_HEADER = "x-novactl-forwarded-by";
export { FORWARDED_FOR_HEADER } from "./remote.ts";

const HOP_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "keep-alive"];

/**
 * Runs the handler on the leader, forwarding there from any other member.
 * @param opts.timeoutMs the forwarded request's bound (default 30 s); null: as long as the
 *   client stays (long streamed answers, e.g. a cluster backup)
 */
export function leaderOnly(
  node: ClusterNode,
  opts: { timeoutMs?: number | null } = {},
): MiddlewareHandler<Env> {
  return async (c, next) => {
    if (node.isLeader()) {
      await next();
      if (c.req.header(FORWARDED_HEADER)) {
        c.res.headers.set(APPLIED_HEADER, String(node.fsm.appliedIndex()));
      }
      return;
    }
    if (c.req.header(FORWARDED_HEADER)) throw new NotLeaderError(node.leaderId());
    const url = await waitForLeaderUrl(node);
    c.res = await forwardTo(
      c,
      url,
      node.id,
      opts.timeoutMs === undefined ? 30_000 : opts.timeoutMs,
    );
    await appliedHereToo(node, Number(c.res.headers.get(APPLIED_HEADER)));
  };
}

/**
 * How far the leader had applied when it answered a forwarded request. The forwarding node
 * answers its client only once it has applied as much, so the client's next read on this node
 * (`vm create --wait` polling the VM) sees its own write instead of a 404.
 */
export const APPLIED_HEADER = "x-novactl-applied-index";

async function appliedHereToo(node: ClusterNode, index: number): Promise<void> {
  if (!(index > 0)) return;
  // The write is done either way; a lagging node answers late rather than never.
  await node.waitApplied(index, FORWARDED_APPLY_WAIT_MS).catch(() => {});
}

const FORWARDED_APPLY_WAIT_MS = 5_000;

/** During an election there is briefly no leader; wait a little before giving up. */
async function waitForLeaderUrl(node: ClusterNode, timeoutMs = 3_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (node.isLeader()) return node.identity.url;
    const url = node.leaderUrl();
    if (url) return url;
    if (Date.now() > deadline) throw new NoQuorumError();
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Proxies the request to another member over the peer client.
 *
 * @param body the body when the caller already read it (e.g. under a size cap)
 */
export async function forwardTo(
  c: Context<Env>,
  baseUrl: string,
  self: string,
  timeoutMs: number | null = 30_000,
  body?: BodyInit,
): Promise<Response> {
  const node = c.get("node") as ClusterNode | undefined;
  const src = new URL(c.req.url);
  const headers = new Headers(c.req.raw.headers);
  for (const h of HOP_HEADERS) headers.delete(h);
  headers.set(FORWARDED_HEADER, self);
  for (const [k, v] of Object.entries(forwardingHeaders(c as Context<Env>))) headers.set(k, v);
  const method = c.req.method;
  if (body === undefined && method !== "GET" && method !== "HEAD") {
    body = await c.req.arrayBuffer();
  }
  const peerFetch = node?.peerHttp.fetch ?? ((u: string, i?: RequestInit) => fetch(u, i));
  let res: Response;
  try {
    res = await peerFetch(baseUrl + src.pathname + src.search, {
      method,
      headers,
      body,
      signal: timeoutMs === null ? c.req.raw.signal : AbortSignal.timeout(timeoutMs),
    });
  } catch {
    throw new NoQuorumError(`leader at ${baseUrl} is unreachable; retry later`);
  }
  const out = new Headers(res.headers);
  for (const h of HOP_HEADERS) out.delete(h);
  return new Response(res.body, { status: res.status, headers: out });
}

/** Where a request must run: a member's name (null when it has none) and words for errors. */
export interface Placement {
  member: string | null;
  /** e.g. `VM "web1"`, `operation mig-1234` */
  what: string;
}

/**
 * Requests that must run on one particular member (a VM's host, an
 * operation's runner) are proxied there unchanged, once; the member answers.
 */
export function runsOn(
  node: ClusterNode,
  locate: (c: Context<Env>) => Placement,
  opts: { timeoutMs?: number | null } = {},
): MiddlewareHandler<Env> {
  return async (c, next) => {
    const { member: target, what } = locate(c);
    if (target === node.id) return await next();
    const member = target ? node.fsm.member(target) : null;
    if (!member) throw new ConflictError(`${what} has no reachable host (${target ?? "unplaced"})`);
    if (c.req.header(FORWARDED_HEADER)) {
      throw new ConflictError(`${what} moved while the request was forwarded; retry`);
    }
    try {
      c.res = await forwardTo(c, member.url, node.id, opts.timeoutMs ?? 120_000);
    } catch (err) {
      if (err instanceof NoQuorumError) {
        throw new UnavailableError(`host ${target} of ${what} is unreachable; retry later`);
      }
      throw err;
    }
  };
}

/** Operations on a VM's disks, console or QEMU run on the host that holds it. */
export function hostOnly(
  node: ClusterNode,
  opts: { timeoutMs?: number | null } = {},
): MiddlewareHandler<Env> {
  return runsOn(node, (c) => {
    const name = c.req.param("name") ?? "";
    const vm = node.fsm.vm(name);
    if (!vm) throw new NotFoundError("vm", name);
    return { member: vm.node, what: `VM "${name}"` };
  }, opts);
}
