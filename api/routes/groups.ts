/** /api/v1/groups: placement groups (affinity / anti-affinity, strict or soft). */
import { Hono } from "hono";
import { authorship } from "../context.ts";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import type { Env } from "../context.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { groupListSchema, groupSchema as groupResponseSchema } from "../openapi/schemas.ts";
import { withEtags } from "../etag.ts";

const groupSchema = z.object({
  name: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
    message: "lowercase letters, digits and '-' (1-63 chars)",
  }),
  policy: z.enum(["affinity", "anti-affinity"]),
  strict: z.boolean().default(false),
}).strict();

export function groupRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.group(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List placement groups and their VMs",
    query: pageQuery,
    response: groupListSchema,
  });
  app.get("/", getDoc, (c) => {
    const page = paginate(node.fsm.groups(), parseQuery(c, pageQuery), {
      list: "groups",
      key: (g) => g.name,
    });
    const members = (g: string) => node.fsm.vms().filter((v) => v.group === g).map((v) => v.name);
    return c.json(listBody("groups", mapPage(page, (g) => ({ ...g, members: members(g.name) }))));
  });
  const getNameDoc = doc({ summary: "Show a placement group", response: groupResponseSchema });
  app.get("/:name", getNameDoc, (c) => {
    const g = node.fsm.group(c.req.param("name"));
    if (!g) throw new NotFoundError("group", c.req.param("name"));
    return c.json(g);
  });
  const postDoc = doc({ summary: "Create a placement group", body: groupSchema, status: 201 });
  app.post("/", postDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const group = await parseBody(c, groupSchema);
    const r = await node.propose({
      op: "group.create",
      group,
      ...authorship(c),
    });
    return c.json(r, 201);
  });
  const deleteDoc = doc({ summary: "Delete a placement group" });
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    if (!node.fsm.group(name)) throw new NotFoundError("group", name);
    return c.json(await node.propose({ op: "group.delete", name, at: Date.now() }));
  });
  return app;
}
