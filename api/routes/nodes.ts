/** /api/v1/nodes: hypervisor hosts and their inventory. */
import { Hono } from "hono";
import {
  type ClusterNode,
  drainNode,
  type LeaseTable,
  setNodeState,
} from "../../core/cluster/mod.ts";
import { NotFoundError } from "../../core/errors/mod.ts";
import { bridgeMappingsSchema } from "./routers.ts";
import { parseBody } from "../validate.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import type { Env } from "../context.ts";
import { nodeStatsRoutes } from "./stats.ts";
import type { MetricsSampler } from "../../host/metrics/mod.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { nodeListSchema, nodeSchema, operationSchema } from "../openapi/schemas.ts";
import { withEtags } from "../etag.ts";
import { z } from "zod";
import { labelsSchema } from "../../core/fsm/command_schemas.ts";

/** `PUT /nodes/:name/meta`: the host's whole metadata (keys and values as labels'). */
const nodeMetaBodySchema = z.object({
  meta: labelsSchema.describe("key → value; replaces the host's metadata"),
}).strict();

export function nodeRoutes(
  node: ClusterNode,
  leases: LeaseTable,
  stats?: MetricsSampler,
): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.node(c.req.param("name") ?? ""));

  const getDoc = doc({
    summary: "List hosts with their inventory and state",
    query: pageQuery,
    response: nodeListSchema,
  });
  app.get("/", getDoc, (c) => {
    const states = new Map(node.status().members.map((m) => [m.name, m]));
    const page = paginate(node.fsm.nodes(), parseQuery(c, pageQuery), {
      list: "nodes",
      key: (n) => n.name,
    });
    return c.json(listBody(
      "nodes",
      mapPage(page, (n) => ({
        ...n,
        state: states.get(n.name)?.state ?? n.state,
        role: states.get(n.name)?.role ?? null,
        bridgeMappings: node.fsm.bridgeMappings(n.name),
        meta: node.fsm.nodeMeta(n.name),
      })),
    ));
  });

  app.get("/:name", doc({ summary: "Show a host", response: nodeSchema }), (c) => {
    const name = c.req.param("name");
    const n = node.fsm.node(name);
    if (!n) throw new NotFoundError("node", name);
    const m = node.status().members.find((x) => x.name === name);
    return c.json({
      ...n,
      state: m?.state ?? n.state,
      role: m?.role ?? null,
      bridgeMappings: node.fsm.bridgeMappings(name),
      meta: node.fsm.nodeMeta(name),
    });
  });

  /** Replaces the host's provider bridge mappings (`node set --bridge-mapping`). */
  const putBridgeMappingsDoc = doc({
    summary: "Replace a host's provider bridge mappings",
    body: bridgeMappingsSchema,
  });
  app.put(
    "/:name/bridge-mappings",
    putBridgeMappingsDoc,
    requireRole("admin"),
    leaderOnly(node),
    async (c) => {
      const name = c.req.param("name");
      if (!node.fsm.node(name)) throw new NotFoundError("node", name);
      const { bridgeMappings } = await parseBody(c, bridgeMappingsSchema);
      return c.json(
        await node.propose({
          op: "node.bridgeMappings",
          node: name,
          mappings: bridgeMappings,
          by: c.get("principal").name,
          at: Date.now(),
        }),
      );
    },
  );

  // Level 2 (core/upgrade/): refused with feature_unavailable while a member runs 0.1.0.
  const putMetaDoc = doc({
    summary: "Replace an operator's metadata on a host (needs cluster level 2)",
    body: nodeMetaBodySchema,
  });
  app.put("/:name/meta", putMetaDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    if (!node.fsm.node(name)) throw new NotFoundError("node", name);
    const { meta } = await parseBody(c, nodeMetaBodySchema);
    return c.json(
      await node.propose({
        op: "node.meta",
        name,
        meta,
        by: c.get("principal").name,
        at: Date.now(),
      }),
    );
  });

  const postCordonDoc = doc({ summary: "Cordon a host: no new VMs" });
  app.post("/:name/cordon", postCordonDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    return c.json(await setNodeState(node, c.req.param("name"), "cordoned"));
  });
  const postUncordonDoc = doc({ summary: "Uncordon a host" });
  app.post(
    "/:name/uncordon",
    postUncordonDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      return c.json(await setNodeState(node, c.req.param("name"), "ready"));
    },
  );
  for (const mode of ["drain", "evacuate"] as const) {
    const summary = mode === "drain"
      ? "Drain a host: migrate its VMs away and cordon it (202 with the operation)"
      : "Evacuate a host: migrate or restart its VMs elsewhere (202 with the operation)";
    const modeDoc = doc({ summary, response: operationSchema, status: 202 });
    app.post(`/:name/${mode}`, modeDoc, requireRole("operator"), leaderOnly(node), async (c) => {
      const op = await drainNode(node, c.req.param("name"), mode, leases, c.get("principal").name);
      return c.json(op, 202);
    });
  }

  app.route("/", nodeStatsRoutes(node, stats));

  return app;
}
