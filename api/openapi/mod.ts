/**
 * The OpenAPI document of the public API: route declarations (route_doc.ts), response
 * schemas (schemas.ts), the generator (document.ts) and the route that serves it.
 *
 * @module
 */
import { Hono } from "hono";
import type { Env } from "../context.ts";
import { openApiDocument } from "./document.ts";
import { doc } from "./route_doc.ts";

export { openApiDocument, PUBLIC_PREFIX, publicRoutes } from "./document.ts";
export { doc, docOf, parseQuery, queryFlag, type RouteDoc } from "./route_doc.ts";

/**
 * `GET /openapi.json` for `app`, to mount under /api/v1 after every other route. It needs no
 * token (like the CA certificate, it tells nothing about the cluster's state), and a token
 * sent anyway is ignored, so tools can fetch it either way.
 */
export function openApiRoutes(app: Hono<Env>): Hono<Env> {
  const routes = new Hono<Env>();
  // Routes are all mounted before the first request: build the document once.
  let json: string | undefined;
  routes.get("/openapi.json", doc({ summary: "This OpenAPI 3.1 document" }), (c) => {
    json ??= JSON.stringify(openApiDocument(app));
    return c.body(json, 200, { "content-type": "application/json" });
  });
  return routes;
}
