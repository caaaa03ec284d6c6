/**
 * Any node accepts any request: requests that need the leader (writes and
 * linearizable reads) are proxied to it unchanged, once. A forwarded request
 * that lands on a non-leader (leadership moved meanwhile) gets 503.
 */
import type { Context, MiddlewareHandler } from "hono";
import { NoQuorumError, NotLeaderError } from "../core/errors/mod.ts";
import type { ClusterNode } from "../core/cluster/mod.ts";
import type { Env } from "./context.ts";

export const FORWARDED_HEADER = "x-novactl-forwarded-by";

const HOP_HEADERS = ["host", "connection", "content-length", "transfer-encoding", "keep-alive"];

export function leaderOnly(node: ClusterNode): MiddlewareHandler<Env> {
  return async (c, next) => {
    if (node.isLeader()) return await next();
    if (c.req.header(FORWARDED_HEADER)) throw new NotLeaderError(node.leaderId());
    const url = await waitForLeaderUrl(node);
    c.res = await forwardTo(c, url, node.id);
  };
}

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

export async function forwardTo(c: Context, baseUrl: string, self: string): Promise<Response> {
  const src = new URL(c.req.url);
  const headers = new Headers(c.req.raw.headers);
  for (const h of HOP_HEADERS) headers.delete(h);
  headers.set(FORWARDED_HEADER, self);
  const method = c.req.method;
  const body = method === "GET" || method === "HEAD" ? undefined : await c.req.arrayBuffer();
  let res: Response;
  try {
    res = await fetch(baseUrl + src.pathname + src.search, {
      method,
      headers,
      body,
      signal: AbortSignal.timeout(30_000),
    });
  } catch {
    throw new NoQuorumError(`leader at ${baseUrl} is unreachable; retry later`);
  }
  const out = new Headers(res.headers);
  for (const h of HOP_HEADERS) out.delete(h);
  return new Response(res.body, { status: res.status, headers: out });
}
