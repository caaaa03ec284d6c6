/**
 * /api/v1/routers and /api/v1/floating-ips: OVN logical routers between
 * networks and an uplink (flat or vlan network) with SNAT, and floating IPs
 * (dnat_and_snat) on uplinks; the state is core/fsm/routers.ts, the OVN rows
 * host/ovs/northbound_routers.ts.
 *
 * Routers:
 * - `POST /` `{name, uplink?, uplinkIp?, snat?}`; `GET /`; `GET /:name`; `DELETE /:name`
 *   (409 while networks are attached)
 * - `POST /:name/networks` `{network}` attaches; `DELETE /:name/networks/:network` detaches
 * - `PUT /:name/uplink` `{uplink: NAME|null, ip?}` sets, moves or removes the uplink
 *
 * Views carry `gatewayChassis`: the hosts that map the uplink's physnet, highest
 * priority first (the first live one carries the gateway).
 *
 * Floating IPs, named by their address:
 * - `POST /` `{network, ip?}`; `GET /`; `GET /:ip`; `DELETE /:ip`
 * - `POST /:ip/attach` `{vm, nic?}` (nic 0 by default); `POST /:ip/detach`
 */
import { Hono } from "hono";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import { checkMappings } from "../../core/fsm/bridge_mappings.ts";
import { gatewayOrder, ROUTER_NAME, type RouterRecord } from "../../core/fsm/routers.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import { authorship, type Env } from "../context.ts";
import { listBody, mapPage, pagedList, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const NAME = z.string().regex(ROUTER_NAME, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});
const NETWORK = z.string().min(1).max(63);
const IPV4 = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}$/, { message: "an IPv4 address" });

const routerSchema = z.object({
  name: NAME,
  uplink: NETWORK.nullable().default(null),
  uplinkIp: IPV4.nullable().default(null),
  snat: z.boolean().default(true),
}).strict();

const attachSchema = z.object({ network: NETWORK }).strict();
const uplinkSchema = z.object({
  uplink: NETWORK.nullable(),
  ip: IPV4.nullable().default(null),
}).strict();

/** `PUT /api/v1/nodes/:name/bridge-mappings`: physnet → bridge; `{}` clears them. */
export const bridgeMappingsSchema = z.object({
  bridgeMappings: z.record(z.string().max(64), z.string().max(15)).superRefine((m, ctx) => {
    try {
      checkMappings(m);
    } catch (err) {
      const issue = err instanceof ValidationError ? err.issues[0]?.message : undefined;
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: issue ?? String(err) });
    }
  }),
}).strict();

const fipSchema = z.object({ network: NETWORK, ip: IPV4.nullable().default(null) }).strict();
const fipAttachSchema = z.object({
  vm: z.string().min(1).max(253),
  nic: z.number().int().min(0, "a NIC index, 0 or more").max(63, "a NIC index, at most 63")
    .default(0),
}).strict();

/** A router as the API shows it: with its gateway hosts in priority order. */
export function routerView(node: ClusterNode, r: RouterRecord) {
  const physnet = r.uplink === null ? null : node.fsm.network(r.uplink)?.physnet ?? null;
  const chassis = physnet === null ? [] : gatewayOrder(r.name, node.fsm.hostsMapping(physnet));
  return {
    ...r,
    gatewayChassis: chassis.map((name, i) => ({ node: name, priority: chassis.length - i })),
  };
}

export function routerRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const routers = node.fsm.routers;
  const mustGet = (name: string) => {
    const r = routers.get(name);
    if (!r) throw new NotFoundError("router", name);
    return r;
  };

  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => routers.get(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List routers",
    query: pageQuery,
    response: listOf("routers", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const page = paginate(routers.all(), q, { list: "routers", key: (r) => r.name });
    return c.json(listBody("routers", mapPage(page, (r) => routerView(node, r))));
  });
  app.get("/:name", doc({ summary: "Show a router" }), (c) => {
    const r = mustGet(c.req.param("name"));
    const attached = new Set(r.networks);
    const floatingIps = routers.floatingIps().filter((f) =>
      f.vm !== null && attached.has(node.fsm.vm(f.vm)?.nics?.[f.nic!]?.network ?? "")
    );
    return c.json({ ...routerView(node, r), floatingIps });
  });
  const postDoc = doc({ summary: "Create a router", body: routerSchema, status: 201 });
  app.post("/", postDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, routerSchema);
    const r = await node.propose({
      op: "router.create",
      router: body,
      ...authorship(c),
    }) as RouterRecord;
    return c.json(routerView(node, r), 201);
  });
  const deleteDoc = doc({ summary: "Delete a router" });
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    mustGet(name);
    return c.json(await node.propose({ op: "router.delete", name, ...authorship(c) }));
  });
  const postNetworksDoc = doc({
    summary: "Attach a network to a router",
    body: attachSchema,
    status: 201,
  });
  app.post(
    "/:name/networks",
    postNetworksDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const name = c.req.param("name");
      mustGet(name);
      const { network } = await parseBody(c, attachSchema);
      const r = await node.propose({
        op: "router.attach",
        router: name,
        network,
        ...authorship(c),
      }) as RouterRecord;
      return c.json(routerView(node, r));
    },
  );
  const deleteNetworksDoc = doc({ summary: "Detach a network from a router" });
  app.delete(
    "/:name/networks/:network",
    deleteNetworksDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const name = c.req.param("name");
      mustGet(name);
      const r = await node.propose({
        op: "router.detach",
        router: name,
        network: c.req.param("network"),
        ...authorship(c),
      }) as RouterRecord;
      return c.json(routerView(node, r));
    },
  );
  const putUplinkDoc = doc({ summary: "Set a router's uplink", body: uplinkSchema });
  app.put("/:name/uplink", putUplinkDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    mustGet(name);
    const body = await parseBody(c, uplinkSchema);
    const r = await node.propose({
      op: "router.uplink",
      router: name,
      uplink: body.uplink,
      ip: body.ip,
      ...authorship(c),
    }) as RouterRecord;
    return c.json(routerView(node, r));
  });
  return app;
}

export function floatingIpRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const routers = node.fsm.routers;
  const mustExist = (ip: string) => {
    if (!routers.floatingIp(ip)) throw new NotFoundError("floating IP", ip);
  };

  app.use("*", bearerAuth(node));
  withEtags(app, "/:ip", (c) => routers.floatingIp(c.req.param("ip") ?? ""));
  const getDoc2 = doc({
    summary: "List floating IPs",
    query: pageQuery,
    response: listOf("floatingIps", recordSchema),
  });
  app.get("/", getDoc2, (c) => {
    const q = parseQuery(c, pageQuery);
    const spec = { list: "floatingIps", key: (f: { ip: string }) => f.ip };
    return c.json(pagedList("floatingIps", routers.floatingIps(), q, spec));
  });
  app.get("/:ip", doc({ summary: "Show a floating IP" }), (c) => {
    const ip = c.req.param("ip");
    mustExist(ip);
    return c.json(routers.floatingIp(ip));
  });
  const postDoc2 = doc({ summary: "Allocate a floating IP", body: fipSchema, status: 201 });
  app.post("/", postDoc2, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, fipSchema);
    const r = await node.propose({
      op: "fip.create",
      network: body.network,
      ip: body.ip,
      ...authorship(c),
    });
    return c.json(r, 201);
  });
  const deleteIpDoc = doc({ summary: "Release a floating IP" });
  app.delete("/:ip", deleteIpDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const ip = c.req.param("ip");
    mustExist(ip);
    return c.json(await node.propose({ op: "fip.delete", ip, ...authorship(c) }));
  });
  const postAttachDoc = doc({
    summary: "Attach a floating IP to a VM's NIC",
    body: fipAttachSchema,
  });
  app.post("/:ip/attach", postAttachDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const ip = c.req.param("ip");
    mustExist(ip);
    const body = await parseBody(c, fipAttachSchema);
    if (!node.fsm.vm(body.vm)) throw new NotFoundError("vm", body.vm);
    return c.json(
      await node.propose({
        op: "fip.attach",
        ip,
        vm: body.vm,
        nic: body.nic,
        ...authorship(c),
      }),
    );
  });
  const postDetachDoc = doc({ summary: "Detach a floating IP" });
  app.post("/:ip/detach", postDetachDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const ip = c.req.param("ip");
    mustExist(ip);
    return c.json(await node.propose({ op: "fip.detach", ip, ...authorship(c) }));
  });
  return app;
}
