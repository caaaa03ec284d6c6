/** /api/v1/tokens: API tokens (admin only): create, list, revoke, rotate. */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import {
  createApiToken,
  revokeApiToken,
  rotateApiToken,
} from "../../core/cluster/token_service.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { ROLES, TOKEN_NAME, TOKEN_NAME_RULE } from "../../core/fsm/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody, parseDuration } from "../validate.ts";
import type { Env } from "../context.ts";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const nameSchema = z.string().regex(TOKEN_NAME, { message: TOKEN_NAME_RULE });

/** A TTL: a duration string ("30d", "12h", "90s") or a number of seconds. */
const ttlSchema = z.union([z.string(), z.number().positive()]).optional();

const createSchema = z.object({
  name: nameSchema,
  role: z.enum(ROLES as [string, ...string[]]),
  ttl: ttlSchema,
}).strict();

const rotateSchema = z.object({ ttl: ttlSchema }).strict();

function ttlMs(ttl: string | number | undefined): number | undefined {
  if (ttl === undefined) return undefined;
  return typeof ttl === "number" ? ttl * 1000 : parseDuration(ttl, "ttl");
}

function checkName(name: string): string {
  const r = nameSchema.safeParse(name);
  if (!r.success) throw new NotFoundError("token", name);
  return name;
}

export function tokenRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node), requireRole("admin"));

  const getDoc = doc({
    summary: "List API tokens",
    query: pageQuery,
    response: listOf("tokens", recordSchema),
  });
  app.get("/", getDoc, leaderOnly(node), async (c) => {
    const q = parseQuery(c, pageQuery);
    await node.linearizableRead();
    const now = Date.now();
    const page = paginate(node.fsm.apiTokens(), q, { list: "tokens", key: (t) => t.name });
    return c.json(listBody(
      "tokens",
      mapPage(page, (t) => ({
        ...t,
        expired: t.expiresAt !== null && Date.parse(t.expiresAt) <= now,
      })),
    ));
  });

  const postDoc = doc({
    summary: "Create an API token (its secret is shown once)",
    body: createSchema,
    status: 201,
  });
  app.post("/", postDoc, leaderOnly(node), async (c) => {
    const body = await parseBody(c, createSchema);
    const issued = await createApiToken(
      node,
      { name: body.name, role: body.role as (typeof ROLES)[number], ttlMs: ttlMs(body.ttl) },
      c.get("principal").name,
    );
    return c.json(issued, 201);
  });

  app.delete("/:name", doc({ summary: "Revoke an API token" }), leaderOnly(node), async (c) => {
    const name = checkName(c.req.param("name"));
    await revokeApiToken(node, name, c.get("principal").name);
    return c.json({ name, revoked: true });
  });

  const postRotateDoc = doc({ summary: "Rotate an API token's secret", body: rotateSchema });
  app.post("/:name/rotate", postRotateDoc, leaderOnly(node), async (c) => {
    const name = checkName(c.req.param("name"));
    const body = await parseBody(c, rotateSchema);
    return c.json(
      await rotateApiToken(node, { name, ttlMs: ttlMs(body.ttl) }, c.get("principal").name),
    );
  });

  return app;
}
