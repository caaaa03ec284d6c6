/**
 * What each public route declares about itself, in the route's own chain:
 * `app.post("/", doc({ summary, body, response }), requireRole(...), handler)`.
 *
 * The declaration is a middleware, so it lives next to the handler and Hono's own
 * `app.routes` says where it is mounted: api/openapi/document.ts reads the method and path
 * from Hono, the declaration from this middleware and the role from `requireRole`, and no
 * second table of paths can drift from the real one. The request schemas declared here are
 * the ones that validate: `parseBody` (api/validate.ts) and {@link parseQuery} refuse (500) a
 * schema other than the route's declared one, so a handler cannot quietly validate against
 * something the document does not show.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { z } from "zod";
import { NovaError } from "../../core/errors/mod.ts";
import { zodToValidationError } from "../errors.ts";

/** A route's contract, as the OpenAPI document shows it. */
export interface RouteDoc {
  summary: string;
  description?: string;
  /** The JSON request body's schema; handlers read it with {@link parseBody}. */
  body?: z.ZodTypeAny;
  /** A body that is not JSON (an upload): its media type. */
  rawBody?: string;
  /** The query parameters: a zod object of strings; handlers read it with {@link parseQuery}. */
  query?: z.AnyZodObject;
  /** The success answer's JSON schema; absent: any JSON. */
  response?: z.ZodTypeAny;
  /** Answers whose schema depends on the status, e.g. a dry run's 200 beside a create's 201. */
  responses?: Record<number, z.ZodTypeAny>;
  /** A success answer that is not JSON: its media type. */
  responseType?: string;
  /** Success statuses; the first is the usual one. Default 200. */
  status?: number | number[];
  /** The success status whose answer names an operation's URL in `Location` (202). */
  locationOn?: number;
}

const DOCS = new WeakMap<object, RouteDoc>();
const DECLARED = new WeakMap<Request, RouteDoc>();

/** The declaration of route middleware `handler`, if it is one made by {@link doc}. */
export function docOf(handler: unknown): RouteDoc | undefined {
  return typeof handler === "function" ? DOCS.get(handler) : undefined;
}

/** Declares a route's contract; put it first in the route's chain. */
export function doc(d: RouteDoc): MiddlewareHandler {
  const mw: MiddlewareHandler = async (c, next) => {
    DECLARED.set(c.req.raw, d);
    await next();
  };
  DOCS.set(mw, d);
  return mw;
}

/** A schema that is not the route's declared one: a programming error, never the client's. */
function undeclared(c: Context, what: string): NovaError {
  return new NovaError(
    "internal",
    `${c.req.method} ${c.req.routePath}: ${what} schema is not the one its doc() declares`,
  );
}

/**
 * Throws unless `schema` is what the matched route's doc() declared as its `field`. A route
 * without a doc() passes here (api/openapi/openapi_test.ts fails on it instead), so a route
 * added on another branch keeps working when merged before it is declared.
 */
export function assertDeclared(c: Context, field: "body" | "query", schema: z.ZodTypeAny): void {
  const declared = DECLARED.get(c.req.raw);
  if (declared && declared[field] !== schema) throw undeclared(c, field);
}

/** Parses the query string with the route's declared query schema (400 naming the parameter). */
export function parseQuery<T extends z.AnyZodObject>(c: Context, schema: T): z.output<T> {
  assertDeclared(c, "query", schema);
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw zodToValidationError(parsed.error);
  return parsed.data;
}

/** A boolean query parameter: `true` or `false`, absent meaning false. */
export const queryFlag = z.enum(["true", "false"]).optional();
