/** /api/v1/cluster: status, join tokens, join, remove, leadership transfer. */
import { Hono } from "hono";
import { z } from "zod";
import {
  admitMember,
  type ClusterNode,
  createJoinToken,
  NotLeaderRetry,
  removeMember,
  transferLeader,
} from "../../core/cluster/mod.ts";
import { applyRebalance, rebalancePlan } from "../../core/cluster/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { forwardTo, leaderOnly } from "../forward.ts";
import { parseBody, parseDuration } from "../validate.ts";
import { inventorySchema, labelsSchema } from "../../core/fsm/command_schemas.ts";
import type { Env } from "../context.ts";

const NAME = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});

export const joinSchema = z.object({
  name: NAME,
  url: z.string().url(),
  token: z.string().min(1),
  inventory: inventorySchema,
  labels: labelsSchema.default({}),
});

export function clusterRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();

  // Joining nodes have no API token yet: the join token in the body authenticates them.
  app.post("/join", leaderOnly(node), async (c) => {
    const req = await parseBody(c, joinSchema);
    return c.json(await admitMember(node, req), 201);
  });

  app.use("*", bearerAuth(node));

  // `?local=true` answers from this node's own view (for debugging and tests) instead of the leader's.
  app.get(
    "/",
    async (c, next) => {
      if (c.req.query("local") === "true") return c.json(node.status());
      await next();
    },
    leaderOnly(node),
    (c) => c.json(node.status()),
  );

  app.post("/tokens", requireRole("admin"), leaderOnly(node), async (c) => {
    const body = await parseBody(
      c,
      z.object({ ttl: z.union([z.string(), z.number()]).optional() }),
    );
    const ttl = body.ttl === undefined
      ? 3_600_000
      : typeof body.ttl === "number"
      ? body.ttl * 1000
      : parseDuration(body.ttl, "ttl");
    return c.json(await createJoinToken(node, ttl, c.get("principal").name), 201);
  });

  app.get("/tokens", requireRole("admin"), leaderOnly(node), async (c) => {
    await node.linearizableRead();
    return c.json({ tokens: node.fsm.joinTokens() });
  });

  app.delete("/members/:name", requireRole("admin"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    try {
      await removeMember(node, name);
    } catch (err) {
      if (!(err instanceof NotLeaderRetry)) throw err;
      const url = node.leaderUrl();
      if (!url) throw err;
      return await forwardTo(c, url, node.id);
    }
    return c.json({ removed: name });
  });

  app.post("/rebalance", requireRole("operator"), leaderOnly(node), async (c) => {
    const dryRun = c.req.query("dryRun") === "true";
    await node.linearizableRead();
    const plan = rebalancePlan(node);
    if (dryRun) return c.json({ dryRun: true, ...plan });
    if (!plan.moves.length) return c.json({ dryRun: false, ...plan, operation: null });
    const op = await applyRebalance(node, plan, c.get("principal").name);
    return c.json({ dryRun: false, ...plan, operation: op }, 202);
  });

  app.post("/transfer-leader", requireRole("admin"), leaderOnly(node), async (c) => {
    const { name } = await parseBody(c, z.object({ name: NAME }));
    await transferLeader(node, name);
    return c.json({ leader: name });
  });

  return app;
}
