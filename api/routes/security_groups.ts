/**
 * /api/v1/security-groups: stateful allow rules for NICs, enforced by OVN
 * port groups and ACLs (host/ovs/northbound.ts).
 *
 * - `POST /` `{name, description?}`; `GET /`; `GET /:name` (rules and member NICs);
 *   `DELETE /:name` (409 while a NIC is in it or another group's rule names it)
 * - `POST /:name/rules` `{direction, protocol, port?, remote?, remoteGroup?}` (mirrors
 *   `sg rule add`: `port` is `N`, `"N"` or `"N-M"`; `remote` a CIDR) answers the rule with
 *   its `id`; `DELETE /:name/rules/:id`
 */
import { Hono } from "hono";
import { authorship } from "../context.ts";
import { z } from "zod";
import type { ClusterNode } from "../../core/cluster/mod.ts";
import { NotFoundError, ValidationError } from "../../core/errors/mod.ts";
import type { SecurityGroupRuleSpec } from "../../core/fsm/commands.ts";
import {
  checkRule,
  SECURITY_GROUP_LIMITS,
  SECURITY_GROUP_NAME,
} from "../../core/fsm/security_groups.ts";
import { bearerAuth, requireRole } from "../auth.ts";
import { leaderOnly } from "../forward.ts";
import { parseBody } from "../validate.ts";
import type { Env } from "../context.ts";
import { listBody, mapPage, pageQuery, paginate } from "../pagination.ts";
import { doc, parseQuery } from "../openapi/mod.ts";
import { withEtags } from "../etag.ts";
import { listOf, recordSchema } from "../openapi/schemas.ts";

const NAME = z.string().regex(SECURITY_GROUP_NAME, {
  message: "lowercase letters, digits and '-' (1-63 chars)",
});

const groupSchema = z.object({
  name: NAME,
  description: z.string().max(SECURITY_GROUP_LIMITS.descriptionChars).default(""),
}).strict();

const ruleSchema = z.object({
  direction: z.enum(["ingress", "egress"]),
  protocol: z.enum(["tcp", "udp", "icmp", "any"]),
  port: z.union([z.number(), z.string().max(11)]).optional(),
  remote: z.string().max(18).optional(),
  remoteGroup: z.string().max(63).optional(),
}).strict();

/** `N`, `"N"` or `"N-M"` as a range; checkRule then checks the numbers and the protocol. */
export function parsePortRange(port: number | string | undefined): [number, number] | null {
  if (port === undefined) return null;
  if (typeof port === "number") return [port, port];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(port);
  if (!m) throw ValidationError.field("port", `"${port}" is not a port N or a range N-M`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

/** The body as a rule: each refusal names its field. */
export function ruleSpecOf(body: z.output<typeof ruleSchema>): SecurityGroupRuleSpec {
  const ports = parsePortRange(body.port);
  return checkRule({
    direction: body.direction,
    protocol: body.protocol,
    portMin: ports?.[0] ?? null,
    portMax: ports?.[1] ?? null,
    remoteCidr: body.remote ?? null,
    remoteGroup: body.remoteGroup ?? null,
  });
}

export function securityGroupRoutes(node: ClusterNode): Hono<Env> {
  const app = new Hono<Env>();
  const groups = node.fsm.securityGroups;
  const mustExist = (name: string) => {
    if (!groups.get(name)) throw new NotFoundError("security group", name);
  };
  /** Where each member NIC is: its network and address, as `vm show` has them. */
  const portsOf = (name: string) =>
    groups.members(name).map((m) => {
      const nic = node.fsm.vm(m.vm)?.nics?.[m.nic];
      return { vm: m.vm, nic: m.nic, network: nic?.network ?? null, ip: nic?.ip ?? null };
    });

  app.use("*", bearerAuth(node));
  withEtags(app, "/:name", (c) => {
    const name = c.req.param("name") ?? "";
    const g = groups.get(name);
    return g && { ...g, rules: groups.rules(name) };
  });
  const getDoc = doc({
    summary: "List security groups",
    query: pageQuery,
    response: listOf("securityGroups", recordSchema),
  });
  app.get("/", getDoc, (c) => {
    const counts = new Map<string, { rules: number; ports: number }>();
    const count = (g: string) => counts.get(g) ?? counts.set(g, { rules: 0, ports: 0 }).get(g)!;
    for (const r of groups.rules(null)) count(r.group).rules++;
    for (const m of groups.members(null)) count(m.group).ports++;
    const q = parseQuery(c, pageQuery);
    const page = paginate(groups.all(), q, { list: "securityGroups", key: (g) => g.name });
    return c.json(listBody("securityGroups", mapPage(page, (g) => ({ ...g, ...count(g.name) }))));
  });
  app.get("/:name", doc({ summary: "Show a security group and its rules" }), (c) => {
    const name = c.req.param("name");
    const g = groups.get(name);
    if (!g) throw new NotFoundError("security group", name);
    return c.json({ ...g, rules: groups.rules(name), ports: portsOf(name) });
  });
  const postDoc = doc({ summary: "Create a security group", body: groupSchema, status: 201 });
  app.post("/", postDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const body = await parseBody(c, groupSchema);
    const r = await node.propose({
      op: "sg.create",
      group: { name: body.name, description: body.description },
      ...authorship(c),
    });
    return c.json(r, 201);
  });
  const deleteDoc = doc({ summary: "Delete a security group" });
  app.delete("/:name", deleteDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    mustExist(name);
    return c.json(
      await node.propose({ op: "sg.delete", name, ...authorship(c) }),
    );
  });
  const postRulesDoc = doc({ summary: "Add an allow rule", body: ruleSchema, status: 201 });
  app.post("/:name/rules", postRulesDoc, requireRole("operator"), leaderOnly(node), async (c) => {
    const name = c.req.param("name");
    mustExist(name);
    const rule = ruleSpecOf(await parseBody(c, ruleSchema));
    if (rule.remoteGroup !== null && !groups.get(rule.remoteGroup)) {
      throw ValidationError.field(
        "remoteGroup",
        `security group "${rule.remoteGroup}" not found`,
      );
    }
    const r = await node.propose({
      op: "sg.rule.add",
      group: name,
      rule,
      ...authorship(c),
    });
    return c.json(r, 201);
  });
  const deleteRulesDoc = doc({ summary: "Remove a rule" });
  app.delete(
    "/:name/rules/:id",
    deleteRulesDoc,
    requireRole("operator"),
    leaderOnly(node),
    async (c) => {
      const name = c.req.param("name");
      mustExist(name);
      return c.json(
        await node.propose({
          op: "sg.rule.remove",
          group: name,
          id: c.req.param("id"),
          ...authorship(c),
        }),
      );
    },
  );
  return app;
}
