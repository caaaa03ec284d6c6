/** /api/v1/networks: virtual networks (overlay, vlan, flat) with their subnet and IPAM. */
import { Hono } from "hono";
import { authorship } from "../context.ts";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import type { NetworkSpec } from "../../core/fsm/commands.ts";
import {
  defaultGateway,
  formatIpv4,
  parseCidr,
  parseIpv4,
  parseReservedRanges,
} from "../../core/network/mod.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import type { Env } from "../context.ts";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

/** Geneve's encapsulation takes 58 bytes of a 1500-byte underlay MTU (OVN's own default). */
export const OVERLAY_MTU = 1442;
const UNDERLAY_MTU = 1500;
const DEFAULT_PHYSNET = "physnet1";

const ipv4 = z.string().max(15);

const networkSchema = z.object({
  name: z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
    message: "lowercase letters, digits and '-' (1-63 chars)",
  }),
  type: z.enum(["overlay", "vlan", "flat"]),
  subnet: z.string().max(18),
  /** Absent: the subnet's first host address; null: no gateway. */
  gateway: ipv4.nullable().optional(),
  vlan: z.number().int().min(1, "must be 1-4094").max(4094, "must be 1-4094").optional(),
  physnet: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, {
    message: "letters, digits, '_', '.' and '-' (1-64 chars)",
  }).optional(),
  dhcp: z.boolean().default(true),
  dns: z.array(ipv4).max(8).default([]),
  mtu: z.number().int().min(576, "must be at least 576").max(9000, "must be at most 9000")
    .optional(),
  nat: z.boolean().default(false),
  reserved: z.array(z.string().max(31)).max(32).default([]),
}).strict();

type NetworkBody = z.output<typeof networkSchema>;

/** The body as a spec: type rules checked and defaults filled, each refusal naming its field. */
export function networkSpecOf(body: NetworkBody): NetworkSpec {
  if (body.type === "vlan" && body.vlan === undefined) {
    throw ValidationError.field("vlan", "a vlan network needs its VLAN id (1-4094)");
  }
  if (body.type !== "vlan" && body.vlan !== undefined) {
    throw ValidationError.field("vlan", `only a vlan network has a VLAN id, not ${body.type}`);
  }
  if (body.type === "overlay" && body.physnet !== undefined) {
    throw ValidationError.field("physnet", "an overlay network has no provider network");
  }
  const cidr = parseCidr(body.subnet, "subnet");
  const gateway = body.gateway === undefined
    ? defaultGateway(cidr)
    : body.gateway === null
    ? null
    : parseIpv4(body.gateway, "gateway");
  body.dns.forEach((d, i) => parseIpv4(d, `dns[${i}]`));
  parseReservedRanges(body.reserved, cidr, "reserved");
  const overlay = body.type === "overlay";
  return {
    name: body.name,
    type: body.type,
    subnet: cidr.text,
    gateway: gateway === null ? null : formatIpv4(gateway),
    vlan: body.vlan ?? null,
    physnet: overlay ? null : body.physnet ?? DEFAULT_PHYSNET,
    dhcp: body.dhcp,
    dns: body.dns,
    mtu: body.mtu ?? (overlay ? OVERLAY_MTU : UNDERLAY_MTU),
    nat: body.nat,
    reserved: body.reserved,
  };
}

export function networkRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => node.fsm.network(c.req.param("name") ?? ""));
  const getDoc = doc({
    summary: "List networks",
    query: pageQuery,
    response: listOf("networks", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const q = parseQuery(c, pageQuery);
    const page = paginate(node.fsm.networks(), q, { list: "networks", key: (n) => n.name });
    const withPorts = mapPage(page, (n) => ({ ...n, ports: node.fsm.networkPorts(n.name).length }));
    return c.json(listBody("networks", withPorts));
  });
  app.get("/:name", doc({ summary: "Show a network" }), (c) => {
    const name = c.req.param("name");
    const n = node.fsm.network(name);
    if (!n) throw new NotFoundError("network", name);
    return c.json({ ...n, ports: node.fsm.networkPorts(name) });
  });
  const postDoc = doc({ summary: "Create a network", body: networkSchema, status: 201 });
  app.post("/", postDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const network = networkSpecOf(await parseBody(c, networkSchema));
    const r = await node.propose({
      op: "network.create",
      network,
      ...authorship(c),
    });
    return c.json(r, 201);
  });
  const deleteDoc = doc({ summary: "Delete a network (409 while NICs use it)" });
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    if (!node.fsm.network(name)) throw new NotFoundError("network", name);
    return c.json(
      await node.propose({
        op: "network.delete",
        name,
        ...authorship(c),
      }),
    );
  });
  return app;
}
