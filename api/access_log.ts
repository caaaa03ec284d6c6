/**
 * One access log line per request, when its answer is ready (a streamed answer, such as
 * the event stream, is logged when its headers go out). API and dashboard requests log at
 * info; peer traffic, health probes and `/metrics`, which machines send many times a
 * second, at debug. The query string is left out: it is the client's, and may hold what
 * a log must not.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { log, logs } from "../core/log/mod.ts";
import type { Env } from "./context.ts";
import { remoteAddress } from "./remote.ts";

/** Paths whose requests are logged at info. */
const USER_PATHS = /^\/(api|ui)(\/|$)/;

export function accessLog(): MiddlewareHandler<Env> {
  return async (c, next) => {
    const t0 = performance.now();
    await next();
    const level = USER_PATHS.test(c.req.path) ? "info" : "debug";
    if (!logs(level)) return;
    log[level]("request", accessFields(c, performance.now() - t0));
  };
}

/** What the line says about the request. */
export function accessFields(c: Context<Env>, ms: number): Record<string, unknown> {
  return {
    method: c.req.method,
    path: c.req.path,
    status: c.res.status,
    ms: Math.round(ms * 10) / 10,
    requestId: c.get("requestId"),
    principal: c.get("principal")?.name ?? c.get("peer") ?? undefined,
    remote: remoteAddress(c),
  };
}
