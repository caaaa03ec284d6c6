/**
 * The OpenAPI 3.1 document of the public API (`/api/v1/...`), built from the running Hono
 * app: paths and methods from `app.routes`, auth and roles from the `bearerAuth` and
 * `requireRole` middlewares on each route's chain, and the rest from the route's `doc()`
 * (api/openapi/route_doc.ts), whose zod schemas are the ones that validate requests.
 * `/healthz`, `/readyz`, `/metrics` and the peer-only `/internal/...` routes are not in it.
 *
 * @module
 */
import type { Hono } from "hono";
import type { z } from "zod";
import { zodToJsonSchema } from "zod-to-json-schema";
import { isBearerAuth, requiredRoleOf } from "../auth.ts";
import { answersEtag, checksIfMatch } from "../etag.ts";
import type { Role } from "../../core/fsm/mod.ts";
import { VERSION } from "../../core/version.ts";
import { docOf, type RouteDoc } from "./route_doc.ts";
import { errorSchema, nameOf } from "./schemas.ts";

/** The prefix of the routes the document covers. */
export const PUBLIC_PREFIX = "/api/v1";

/** One public route as the app has it mounted. */
export interface PublicRoute {
  method: string;
  /** Hono's pattern, e.g. `/api/v1/vms/:name`. */
  path: string;
  doc: RouteDoc | undefined;
  /** How many doc() declarations its chain has: one, or the route is mis-declared. */
  docCount: number;
  /** Whether a bearer token is checked before the handler. */
  bearer: boolean;
  /** Whether writes here check `If-Match` (api/etag.ts). */
  ifMatch: boolean;
  /** Whether the answer carries the resource's `ETag` (api/etag.ts). */
  etag: boolean;
  role: Role | undefined;
}

// deno-lint-ignore no-explicit-any
type AnyHono = Hono<any, any, any>;

/** Whether middleware mounted at `pattern` (`/x/*`, `/x/:p/*`, `/x`) runs for route `path`. */
function covers(pattern: string, path: string): boolean {
  const wild = pattern.endsWith("/*");
  const base = wild ? pattern.slice(0, -2) : pattern;
  const re = base.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/:[^/]+/g, "[^/]+");
  return new RegExp(`^${re}${wild ? "(/.*)?" : ""}$`).test(path) || pattern === "*";
}

/** Every public route of `app`, each method and path once, in registration order. */
export function publicRoutes(app: AnyHono): PublicRoute[] {
  const all = app.routes;
  const byKey = new Map<string, number[]>();
  all.forEach((r, i) => {
    if (r.method === "ALL" || !r.path.startsWith(PUBLIC_PREFIX)) return;
    const key = `${r.method} ${r.path}`;
    byKey.set(key, [...byKey.get(key) ?? [], i]);
  });
  return [...byKey.values()].map((indices) => {
    const { method, path } = all[indices[0]];
    const last = indices[indices.length - 1];
    // What runs before the route's final handler: its own chain and the `use` middlewares
    // registered earlier on a covering pattern.
    const chain = all.filter((r, i) =>
      i <= last && (indices.includes(i) || (r.method === "ALL" && covers(r.path, path)))
    ).map((r) => r.handler);
    return {
      method,
      path,
      doc: chain.map(docOf).find((d) => d !== undefined),
      docCount: chain.filter((h) => docOf(h) !== undefined).length,
      bearer: chain.some(isBearerAuth),
      ifMatch: chain.some(checksIfMatch),
      etag: chain.some(answersEtag),
      role: chain.map(requiredRoleOf).findLast((r) => r !== undefined),
    };
  });
}

type JsonSchema = Record<string, unknown>;

/** zod → JSON Schema (2020-12 compatible); non-strict objects admit further fields. */
export function jsonSchemaOf(schema: z.ZodTypeAny, io: "input" | "output"): JsonSchema {
  const out = zodToJsonSchema(schema, {
    $refStrategy: "none",
    effectStrategy: io === "input" ? "input" : "any",
    pipeStrategy: io,
    removeAdditionalStrategy: "strict",
  }) as JsonSchema;
  delete out.$schema;
  return out;
}

function statusesOf(d: RouteDoc | undefined): number[] {
  const s = d?.status ?? 200;
  return Array.isArray(s) ? s : [s];
}

function operationId(method: string, path: string): string {
  const words = path.slice(PUBLIC_PREFIX.length).split("/").filter(Boolean)
    .map((w) =>
      w.replace(/^:/, "by-").replace(/[^a-zA-Z0-9]+(.)?/g, (_, ch) => ch?.toUpperCase() ?? "")
    );
  return [method.toLowerCase(), ...words.map((w) => w[0].toUpperCase() + w.slice(1))].join("");
}

/** Builds the document; `components` holds every named schema the operations reference. */
export function openApiDocument(app: AnyHono): Record<string, unknown> {
  const components: Record<string, JsonSchema> = {};
  const ref = (schema: z.ZodTypeAny, io: "input" | "output"): JsonSchema => {
    const name = nameOf(schema);
    if (!name) return jsonSchemaOf(schema, io);
    components[name] ??= jsonSchemaOf(schema, io);
    return { $ref: `#/components/schemas/${name}` };
  };
  const errorRef = ref(errorSchema, "output");

  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of publicRoutes(app)) {
    const d = r.doc;
    const oaPath = r.path.replace(/:([A-Za-z0-9_]+)(\{[^}]*\})?/g, "{$1}");
    const parameters: unknown[] = [...r.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string" },
    }));
    if (d?.query) {
      const q = jsonSchemaOf(d.query, "input") as {
        properties?: Record<string, JsonSchema>;
        required?: string[];
      };
      for (const [name, schema] of Object.entries(q.properties ?? {})) {
        const { description, ...rest } = schema;
        parameters.push({
          name,
          in: "query",
          required: q.required?.includes(name) ?? false,
          ...(description ? { description } : {}),
          schema: rest,
        });
      }
    }
    const mutating = r.method !== "GET";
    if (r.ifMatch && mutating) {
      parameters.push({
        name: "If-Match",
        in: "header",
        required: false,
        description: "an ETag of the resource (or *): 412 precondition_failed if it has changed",
        schema: { type: "string" },
      });
    }
    const success: Record<string, unknown> = {};
    for (const status of statusesOf(d)) {
      const media = d?.responseType ?? "application/json";
      const declared = d?.responses?.[status] ?? d?.response;
      const schema = declared && !d?.responseType ? ref(declared, "output") : {};
      success[String(status)] = {
        description: d?.summary ?? "success",
        ...(r.etag && !mutating
          ? {
            headers: {
              ETag: { description: "the resource's version", schema: { type: "string" } },
            },
          }
          : {}),
        ...(d?.locationOn === status
          ? {
            headers: {
              Location: {
                description: "the operation's URL (/api/v1/operations/ID)",
                schema: { type: "string" },
              },
            },
          }
          : {}),
        content: { [media]: { schema } },
      };
    }
    const op: Record<string, unknown> = {
      operationId: operationId(r.method, r.path),
      summary: d?.summary ?? "undocumented",
      tags: [r.path.slice(PUBLIC_PREFIX.length).split("/")[1] ?? "api"],
      ...(d?.description || r.role
        ? {
          description: [d?.description, r.role ? `Requires role \`${r.role}\` or above.` : ""]
            .filter(Boolean).join("\n\n"),
        }
        : {}),
      ...(parameters.length ? { parameters } : {}),
      ...(d?.body
        ? {
          requestBody: {
            required: false,
            content: { "application/json": { schema: ref(d.body, "input") } },
          },
        }
        : d?.rawBody
        ? {
          requestBody: {
            required: true,
            content: { [d.rawBody]: { schema: { type: "string", format: "binary" } } },
          },
        }
        : {}),
      responses: {
        ...success,
        default: {
          description: "an error: 400 validation, 401, 403, 404, 409, 412, 413, 503 ...",
          content: { "application/json": { schema: errorRef } },
        },
      },
      security: r.bearer ? [{ bearer: [] }] : [],
      ...(r.role ? { "x-novactl-role": r.role } : {}),
    };
    (paths[oaPath] ??= {})[r.method.toLowerCase()] = op;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "novactl API",
      version: VERSION,
      description: "The public REST API of a novactl cluster; every node answers every request. " +
        "Not covered: /healthz, /readyz, /metrics and the peer-only /internal routes.",
    },
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    security: [{ bearer: [] }],
  };
}
