/** /api/v1/version: which program this node runs (`novactl version` shows it beside its own). */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { VERSION } from "../../core/version.ts";
import { bearerAuth } from "../auth.ts";
import type { Env } from "../context.ts";
import { doc } from "../openapi/mod.ts";

export const versionSchema = z.object({
  version: z.string().describe("novactl's version on the answering node"),
  api: z.literal("v1").describe("the REST API's version"),
  node: z.string().describe("the answering node"),
  deno: z.string().describe("the Deno runtime's version"),
});

export function versionRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  // Any valid token, of any role: nothing here is a secret from a viewer.
  app.use("*", bearerAuth(node));
  const getDoc = doc({
    summary: "The answering node's program and API versions",
    response: versionSchema,
  });
  app.get("/", getDoc, (c) =>
    c.json(
      { version: VERSION, api: "v1", node: node.id, deno: Deno.version.deno } satisfies z.infer<
        typeof versionSchema
      >,
    ));
  return app;
}
