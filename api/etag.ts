/**
 * ETags and `If-Match` for the API's resources, in one place. A resource's ETag is a hash of its
 * replicated record, so it changes whenever the record does (a VM's state, a network's ports'
 * owner, ...). `GET` of the resource answers it as `ETag`; a write to the resource or any of its
 * sub-resources (`POST /vms/web/stop`, `DELETE /security-groups/g/rules/1`) with an `If-Match`
 * naming another version, or naming one of a resource that does not exist, is refused with
 * 412 precondition_failed before anything is proposed.
 *
 * The check runs where the request is handled; a write forwarded to the leader is checked again
 * there, against the state it decides on. It is check-then-propose, not compare-and-swap in the
 * state machine (as the configuration's version is, api/routes/config.ts): a write that commits
 * between the check and the proposal is not seen. It keeps a client from writing over a change
 * it has not seen, which is what `If-Match` is for in practice.
 *
 * @module
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { createHash } from "node:crypto";
import { PreconditionFailedError } from "../core/errors/mod.ts";

const MUTATING = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const CHECKS = new WeakSet<object>();
const TAGS = new WeakSet<object>();

/** Whether `handler` is the If-Match check {@link withEtags} mounts. */
export function checksIfMatch(handler: unknown): boolean {
  return typeof handler === "function" && CHECKS.has(handler);
}

/** Whether `handler` is the middleware {@link withEtags} mounts to answer a resource's ETag. */
export function answersEtag(handler: unknown): boolean {
  return typeof handler === "function" && TAGS.has(handler);
}

/** The strong ETag of a record: its JSON's SHA-256, quoted. */
export function etagOf(record: unknown): string {
  return `"${createHash("sha256").update(JSON.stringify(record)).digest("hex").slice(0, 32)}"`;
}

/** Whether `header` (`*`, or a comma-separated list of ETags) matches `current`. */
function matches(header: string, current: unknown): boolean {
  if (current === null || current === undefined) return false;
  if (header.trim() === "*") return true;
  const tag = etagOf(current);
  return header.split(",").some((t) => t.trim() === tag);
}

/**
 * Mounts ETags on `app` for the resource at `pattern` (e.g. `/:name`), whose record `load`
 * reads (null or undefined: none). Mount it before the routes, after the authentication.
 */
// deno-lint-ignore no-explicit-any
export function withEtags<A extends Hono<any, any, any>>(
  app: A,
  pattern: string,
  load: (c: Context) => unknown,
): A {
  const check = (c: Context) => {
    const want = c.req.header("if-match");
    if (want === undefined || !MUTATING.has(c.req.method)) return;
    const current = load(c);
    if (!matches(want, current)) {
      throw new PreconditionFailedError(
        current === null || current === undefined
          ? `If-Match ${want}: the resource of ${c.req.path} does not exist`
          : `If-Match ${want}: the resource of ${c.req.path} has changed (now ${etagOf(current)})`,
        { field: "If-Match", current: current == null ? null : etagOf(current) },
      );
    }
  };
  const own: MiddlewareHandler = async (c, next) => {
    await next();
    if (c.res.status >= 300 || c.res.headers.has("etag")) return;
    const record = load(c);
    if (record === null || record === undefined) return;
    try {
      c.res.headers.set("ETag", etagOf(record));
    } catch {
      // A response relayed from another node has immutable headers (and that node's ETag).
    }
  };
  // Hono's `PATTERN/*` matches PATTERN itself too: this one check covers the resource and its
  // sub-resources.
  const sub: MiddlewareHandler = async (c, next) => {
    check(c);
    await next();
  };
  TAGS.add(own);
  CHECKS.add(sub);
  app.use(pattern, own);
  app.use(`${pattern}/*`, sub);
  return app;
}
