/**
 * Provider bridge mappings: on each host, which OVS bridge carries which
 * provider network (`physnet1` → `br-ex`). vlan and flat networks reach the
 * outside through a localnet port on the bridge their physnet is mapped to,
 * and a router's gateway port can only be active on a host that maps its
 * uplink's physnet. Kept in replicated state (`novactl node set NAME
 * --bridge-mapping physnet1:br-ex`) so that the leader knows the gateway
 * candidates and each host reads its own mappings to apply them
 * (host/ovs/bridge_mappings.ts).
 *
 * @module
 */
import { NotFoundError, ValidationError } from "../errors/mod.ts";
import type { Command } from "./commands.ts";
import * as nodes from "./nodes.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

/** A physnet name, as network create accepts it. */
export const PHYSNET_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** An OVS bridge name: a Linux interface name (15 bytes), not the integration bridge. */
export const BRIDGE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
/** Mappings per host: each is a bridge with a patch port per provider network on it. */
export const MAX_MAPPINGS = 16;

const TABLE = {
  name: "bridge_mappings",
  ddl: `CREATE TABLE IF NOT EXISTS bridge_mappings (
    node TEXT NOT NULL, physnet TEXT NOT NULL, bridge TEXT NOT NULL, PRIMARY KEY (node, physnet));`,
};

/** `node`'s mappings, physnet → bridge (empty when it maps none). */
export function of(s: Store, node: string): Record<string, string> {
  const rows = s.sql(
    "SELECT physnet, bridge FROM bridge_mappings WHERE node = ? ORDER BY physnet",
  ).all(node) as Row[];
  return Object.fromEntries(rows.map((r) => [String(r.physnet), String(r.bridge)]));
}

/** The hosts that map `physnet`, in name order (hosts no longer in the cluster left out). */
export function hostsMapping(s: Store, physnet: string): string[] {
  return (s.sql(
    `SELECT b.node FROM bridge_mappings b JOIN nodes n ON n.name = b.node
     WHERE b.physnet = ? ORDER BY b.node`,
  ).all(physnet) as Row[]).map((r) => String(r.node));
}

/**
 * Checks mappings as an operator gives them; returns them. One bridge may carry several
 * physnets only as separate mappings OVN accepts, so a bridge named twice is refused too
 * (a typo far more often than a plan).
 * @throws ValidationError naming `bridgeMappings`
 */
export function checkMappings(m: Record<string, string>): Record<string, string> {
  const field = "bridgeMappings";
  const entries = Object.entries(m);
  if (entries.length > MAX_MAPPINGS) {
    throw ValidationError.field(field, `at most ${MAX_MAPPINGS} mappings per host`);
  }
  const bridges = new Set<string>();
  for (const [physnet, bridge] of entries) {
    if (!PHYSNET_NAME.test(physnet)) {
      throw ValidationError.field(
        field,
        `physnet "${physnet}": letters, digits, '_', '.' and '-' (1-64 chars)`,
      );
    }
    if (!BRIDGE_NAME.test(bridge) || bridge === "br-int") {
      throw ValidationError.field(
        field,
        `bridge "${bridge}": an interface name (1-15 of letters, digits, '_', '.', '-'), not br-int`,
      );
    }
    if (bridges.has(bridge)) {
      throw ValidationError.field(field, `bridge "${bridge}" is mapped twice`);
    }
    bridges.add(bridge);
  }
  return Object.fromEntries(entries.sort(([a], [b]) => a.localeCompare(b)));
}

function set(s: Store, c: Extract<Command, { op: "node.bridgeMappings" }>): Applied {
  if (!nodes.get(s, c.node)) throw new NotFoundError("node", c.node);
  const mappings = checkMappings(c.mappings);
  s.sql("DELETE FROM bridge_mappings WHERE node = ?").run(c.node);
  for (const [physnet, bridge] of Object.entries(mappings)) {
    s.sql("INSERT INTO bridge_mappings (node, physnet, bridge) VALUES (?, ?, ?)").run(
      c.node,
      physnet,
      bridge,
    );
  }
  return applied({ node: c.node, bridgeMappings: mappings }, {
    resource: "bridgeMapping",
    name: c.node,
  });
}

/** Provider bridge mappings per host. */
export const resource: Resource<"node.bridgeMappings"> = {
  tables: [TABLE],
  appliers: { "node.bridgeMappings": set },
};
