/**
 * OVN's northbound database as derived state: what the replicated networks
 * and NICs (core/fsm/networks.ts) say it must hold, what it holds, and the
 * one `ovn-nbctl` transaction that makes the second equal the first. Run by
 * the leader, again and again: it creates what is missing, changes what
 * differs, deletes what novactl made and no longer wants (drift repaired), and
 * leaves alone every row it did not make (no `novactl-network` external id).
 *
 * Names: a network's logical switch is `nv-NETWORK`; a NIC's port is
 * `nv-VM-NIC`; a provider network's localnet port is `nv-NETWORK-localnet`.
 *
 * Security groups (core/fsm/security_groups.ts) become port groups, which OVN
 * names like address sets (letters, digits, `_` and `.`): group `web-1` is
 * `pg_nv_sg_web_1` (group names have no `_`, so `-` to `_` cannot make two
 * groups one), its rules `allow-related` ACLs on it, and `--remote-sg web-1`
 * the address set OVN keeps for it, `$pg_nv_sg_web_1_ip4`. Two port groups of
 * novactl's own carry the defaults: {@link DEFAULT_PG} (every NIC in any group;
 * its IP ingress dropped below the rules) and {@link EGRESS_PG} (NICs with a
 * group that has egress rules; their IP egress dropped below the rules, DHCP
 * requests excepted). ARP is not IP, and OVN lets its own DHCP replies and the
 * replies of allowed connections through, so guests keep their leases.
 *
 * @module
 */
import type { NetworkRecord, SecurityGroupRule } from "../../core/fsm/mod.ts";
import { firstHost, formatIpv4, parseCidr } from "../../core/network/mod.ts";
import { bindingOptions, type PortPlacement } from "./northbound_migration.ts";

/** The external id that marks a row as novactl's, with the network it belongs to. */
export const OWNER_KEY = "novactl-network";
/** The external id that marks a port group as novactl's: the security group ("" for the defaults). */
export const SG_OWNER_KEY = "novactl-sg";
/** Every NIC in any security group: ingress denied unless a rule allows it. */
export const DEFAULT_PG = "pg_nv_default";
/** NICs in a group with egress rules: egress denied unless a rule allows it. */
export const EGRESS_PG = "pg_nv_egress";
/** ACL priorities: rules above the default drops (OVN allows 0..32767). */
export const RULE_PRIORITY = 1002;
export const DROP_PRIORITY = 1001;
/** DHCP leases: an hour, renewed at half. */
const LEASE_SECONDS = 3600;

/** A NIC as the northbound database needs it. */
export interface NicPort {
  vm: string;
  nic: number;
  network: string;
  ip: string | null;
  mac: string;
  /** Where the VM runs: which chassis may bind the port (./northbound_migration.ts). */
  placement?: PortPlacement;
}

/** One logical switch port as novactl wants it. */
export interface PortRow {
  name: string;
  network: string;
  /** `MAC IP`, `MAC`, or `unknown` for a localnet port. */
  addresses: string;
  portSecurity: string | null;
  type: "" | "localnet";
  options: Record<string, string>;
  tag: number | null;
  /** Whether the network's DHCP options apply to this port. */
  dhcp: boolean;
}

/** One network's rows as novactl wants them. */
export interface SwitchRows {
  name: string;
  network: string;
  /** OVN native DHCP options for the subnet; null with `--no-dhcp`. */
  dhcp: { cidr: string; options: Record<string, string> } | null;
  ports: PortRow[];
}

export const switchName = (network: string) => `nv-${network}`;
export const portGroupName = (group: string) => `pg_nv_sg_${group.replace(/-/g, "_")}`;
export const portName = (vm: string, nic: number) => `nv-${vm}-${nic}`;

/** What the northbound database must hold for `networks` and their NICs. */
export function desiredNorthbound(networks: NetworkRecord[], nics: NicPort[]): SwitchRows[] {
  return networks.map((n) => ({
    name: switchName(n.name),
    network: n.name,
    dhcp: n.dhcp ? { cidr: n.subnet, options: dhcpOptions(n) } : null,
    ports: [
      ...(n.type === "overlay" ? [] : [localnetPort(n)]),
      ...nics.filter((p) => p.network === n.name).map((p) => nicPort(n, p)),
    ],
  }));
}

/** A security group as the northbound pass needs it: its rules and member NICs. */
export interface SecurityGroupState {
  name: string;
  rules: Pick<
    SecurityGroupRule,
    "direction" | "protocol" | "portMin" | "portMax" | "remoteCidr" | "remoteGroup"
  >[];
  members: { vm: string; nic: number }[];
}

/** One ACL on a port group as novactl wants it. */
export interface AclRow {
  direction: "to-lport" | "from-lport";
  priority: number;
  match: string;
  action: "allow-related" | "drop";
}

/** One port group as novactl wants it: its member ports (by name) and ACLs. */
export interface PortGroupRow {
  name: string;
  /** The security group it enforces; "" for novactl's default groups. */
  group: string;
  ports: string[];
  acls: AclRow[];
}

/**
 * The port groups and ACLs that enforce `groups` on the NICs of `nics` (a
 * member whose NIC has no port, e.g. on a network being deleted, is left out:
 * a port group can only hold ports that exist).
 */
export function desiredPortGroups(groups: SecurityGroupState[], nics: NicPort[]): PortGroupRow[] {
  if (!groups.length) return [];
  const existing = new Set(nics.map((p) => portName(p.vm, p.nic)));
  const portsOf = (g: SecurityGroupState) =>
    [...new Set(g.members.map((m) => portName(m.vm, m.nic)))].filter((p) => existing.has(p))
      .sort();
  const rows: PortGroupRow[] = groups.map((g) => {
    const pg = portGroupName(g.name);
    const acls = new Map<string, AclRow>();
    for (const r of g.rules) {
      const acl = ruleAcl(pg, r);
      acls.set(aclKey(acl), acl);
    }
    return { name: pg, group: g.name, ports: portsOf(g), acls: [...acls.values()] };
  });
  const all = [...new Set(groups.flatMap(portsOf))].sort();
  const egress = [
    ...new Set(
      groups.filter((g) => g.rules.some((r) => r.direction === "egress")).flatMap(portsOf),
    ),
  ].sort();
  rows.push({
    name: DEFAULT_PG,
    group: "",
    ports: all,
    acls: [{
      direction: "to-lport",
      priority: DROP_PRIORITY,
      match: `outport == @${DEFAULT_PG} && ip`,
      action: "drop",
    }],
  }, {
    name: EGRESS_PG,
    group: "",
    ports: egress,
    acls: [{
      direction: "from-lport",
      priority: DROP_PRIORITY,
      match: `inport == @${EGRESS_PG} && ip`,
      action: "drop",
    }, {
      // A NIC whose egress is limited still asks OVN's DHCP for its lease.
      direction: "from-lport",
      priority: RULE_PRIORITY,
      match: `inport == @${EGRESS_PG} && udp && udp.src == 68 && udp.dst == 67`,
      action: "allow-related",
    }],
  });
  return rows;
}

/** A rule as an OVN ACL on its group's port group `pg`. */
function ruleAcl(pg: string, r: SecurityGroupState["rules"][number]): AclRow {
  const ingress = r.direction === "ingress";
  // Ingress: traffic to the group's ports, from the remote; egress: from them, to it.
  const parts = [ingress ? `outport == @${pg}` : `inport == @${pg}`, "ip4"];
  const peer = ingress ? "ip4.src" : "ip4.dst";
  if (r.remoteGroup !== null) parts.push(`${peer} == $${portGroupName(r.remoteGroup)}_ip4`);
  else if (r.remoteCidr !== null && r.remoteCidr !== "0.0.0.0/0") {
    parts.push(`${peer} == ${r.remoteCidr}`);
  }
  if (r.protocol === "icmp") parts.push("icmp4");
  else if (r.protocol === "tcp" || r.protocol === "udp") {
    parts.push(r.protocol);
    if (r.portMin !== null && r.portMax !== null) {
      const port = `${r.protocol}.dst`;
      parts.push(
        r.portMin === r.portMax
          ? `${port} == ${r.portMin}`
          : `${port} >= ${r.portMin} && ${port} <= ${r.portMax}`,
      );
    }
  }
  return {
    direction: ingress ? "to-lport" : "from-lport",
    priority: RULE_PRIORITY,
    match: parts.join(" && "),
    action: "allow-related",
  };
}

/** What makes two ACLs of one port group the same. */
function aclKey(a: AclRow): string {
  return `${a.direction}|${a.priority}|${a.action}|${a.match}`;
}

function dhcpOptions(n: NetworkRecord): Record<string, string> {
  const cidr = parseCidr(n.subnet);
  // server_id and router: the gateway where there is one, else the subnet's first address.
  const server = n.gateway ?? formatIpv4(firstHost(cidr));
  return {
    lease_time: String(LEASE_SECONDS),
    server_id: server,
    server_mac: dhcpServerMac(n.name),
    mtu: String(n.mtu),
    ...(n.gateway ? { router: n.gateway } : {}),
    ...(n.dns.length ? { dns_server: `{${n.dns.join(", ")}}` } : {}),
  };
}

/** A stable, locally administered MAC for OVN's DHCP server on a network. */
export function dhcpServerMac(network: string): string {
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(network)) h = Math.imul(h ^ ch, 0x01000193) >>> 0;
  const b = [(h >>> 16) & 255, (h >>> 8) & 255, h & 255];
  return ["02", "6e", "77", ...b.map((x) => x.toString(16).padStart(2, "0"))].join(":");
}

function localnetPort(n: NetworkRecord): PortRow {
  return {
    name: `${switchName(n.name)}-localnet`,
    network: n.name,
    addresses: "unknown",
    portSecurity: null,
    type: "localnet",
    options: { network_name: n.physnet ?? "physnet1" },
    tag: n.vlan,
    dhcp: false,
  };
}

function nicPort(n: NetworkRecord, p: NicPort): PortRow {
  const addresses = p.ip ? `${p.mac} ${p.ip}` : p.mac;
  return {
    name: portName(p.vm, p.nic),
    network: n.name,
    addresses,
    // A guest may not send from another MAC or address than IPAM gave it.
    portSecurity: addresses,
    type: "",
    options: bindingOptions(p.placement),
    tag: null,
    dhcp: n.dhcp && p.ip !== null,
  };
}

// ---- what the database holds -------------------------------------------------------------

/** A row of novactl's in the northbound database, as read. */
interface ActualPort {
  uuid: string;
  name: string;
  network: string;
  addresses: string;
  portSecurity: string | null;
  type: string;
  options: Record<string, string>;
  tag: number | null;
  dhcpUuid: string | null;
}

/** A port group of novactl's, as read: member port names and ACLs (with their uuids). */
interface ActualPortGroup {
  uuid: string;
  group: string;
  ports: string[];
  acls: (AclRow & { uuid: string })[];
}

export interface ActualNorthbound {
  switches: Map<string, { uuid: string; network: string }>;
  ports: Map<string, ActualPort>;
  dhcp: Map<string, { uuid: string; cidr: string; options: Record<string, string> }>;
  portGroups: Map<string, ActualPortGroup>;
}

/** Runs `ovn-nbctl` with these arguments and returns its stdout. */
export type NbCtl = (args: string[]) => Promise<string>;

/** novactl's rows in the northbound database. */
export async function readNorthbound(nbctl: NbCtl): Promise<ActualNorthbound> {
  const tables: [string, string[]][] = [
    ["Logical_Switch", ["_uuid", "name", "external_ids"]],
    ["Logical_Switch_Port", [
      "_uuid",
      "name",
      "addresses",
      "port_security",
      "type",
      "options",
      "tag",
      "dhcpv4_options",
      "external_ids",
    ]],
    ["DHCP_Options", ["_uuid", "cidr", "options", "external_ids"]],
    ["Port_Group", ["_uuid", "name", "ports", "acls", "external_ids"]],
    ["ACL", ["_uuid", "direction", "priority", "match", "action"]],
  ];
  // One ovn-nbctl run for every table (one JSON document per line): each run connects and
  // downloads afresh, and this read is on the path from a rule change to its enforcement.
  const out = await nbctl([
    "--format=json",
    ...tables.flatMap((
      [table, columns],
    ) => ["--", `--columns=${columns.join(",")}`, "list", table]),
  ]);
  const [switches, ports, dhcp, portGroups, aclRows] = out.trim().split("\n").map((line) => {
    const doc = JSON.parse(line) as { headings: string[]; data: unknown[][] };
    return doc.data.map((row) =>
      Object.fromEntries(doc.headings.map((h, i) => [h, decode(row[i])]))
    ) as Record<string, unknown>[];
  });
  const owner = (r: Record<string, unknown>) =>
    (r.external_ids as Record<string, string>)[OWNER_KEY];
  const actual: ActualNorthbound = {
    switches: new Map(),
    ports: new Map(),
    dhcp: new Map(),
    portGroups: new Map(),
  };
  for (const r of switches) {
    if (owner(r)) {
      actual.switches.set(String(r.name), { uuid: String(r._uuid), network: owner(r) });
    }
  }
  // Port names by uuid: any switch's ports (a port group may hold others' ports after drift).
  const portNames = new Map<string, string>();
  for (const r of ports) {
    portNames.set(String(r._uuid), String(r.name));
    if (!owner(r)) continue;
    const one = (v: unknown) => Array.isArray(v) ? (v[0] ?? null) : v;
    actual.ports.set(String(r.name), {
      uuid: String(r._uuid),
      name: String(r.name),
      network: owner(r),
      addresses: String(one(r.addresses) ?? ""),
      portSecurity: (one(r.port_security) as string | null) ?? null,
      type: String(r.type),
      options: r.options as Record<string, string>,
      tag: (one(r.tag) as number | null) ?? null,
      dhcpUuid: (one(r.dhcpv4_options) as string | null) ?? null,
    });
  }
  for (const r of dhcp) {
    if (owner(r)) {
      actual.dhcp.set(owner(r), {
        uuid: String(r._uuid),
        cidr: String(r.cidr),
        options: r.options as Record<string, string>,
      });
    }
  }
  const acls = new Map<string, AclRow>();
  for (const r of aclRows) {
    acls.set(String(r._uuid), {
      direction: r.direction as AclRow["direction"],
      priority: Number(r.priority),
      match: String(r.match),
      action: r.action as AclRow["action"],
    });
  }
  for (const r of portGroups) {
    const ids = r.external_ids as Record<string, string>;
    if (!(SG_OWNER_KEY in ids)) continue;
    actual.portGroups.set(String(r.name), {
      uuid: String(r._uuid),
      group: ids[SG_OWNER_KEY],
      ports: asList(r.ports).map((u) => portNames.get(u) ?? u).sort(),
      acls: asList(r.acls).flatMap((u) => {
        const acl = acls.get(u);
        return acl ? [{ ...acl, uuid: u }] : [];
      }),
    });
  }
  return actual;
}

/** A decoded OVSDB set column: one member comes back bare, several as an array. */
function asList(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : v === null || v === undefined ? [] : [String(v)];
}

/** An OVSDB JSON value (RFC 7047: atoms, ["uuid", u], ["set", [...]], ["map", [[k, v]...]]). */
function decode(v: unknown): unknown {
  if (!Array.isArray(v)) return v;
  const [kind, body] = v as [string, unknown];
  if (kind === "uuid" || kind === "named-uuid") return body;
  if (kind === "set") return (body as unknown[]).map(decode);
  if (kind === "map") {
    return Object.fromEntries(
      (body as [unknown, unknown][]).map(([k, x]) => [decode(k), decode(x)]),
    );
  }
  return v;
}

// ---- making it so --------------------------------------------------------------------------

/** What one pass changed. */
export interface NorthboundChanges {
  created: string[];
  updated: string[];
  deleted: string[];
}

/**
 * Makes novactl's part of the northbound database equal `desired` and
 * `portGroups` in one `ovn-nbctl` transaction; returns what it changed
 * (nothing when equal). One transaction: a NIC's port and its port group
 * membership appear together, so no host ever sees the port without its ACLs.
 * `known`: the database as a read right after the last write found it, which
 * takes the read off the way from a change to its enforcement. If someone
 * else changed the database since, the transaction fails (a row it names is
 * gone) or the drift stays until the caller's next fresh read: callers read
 * afresh after a failure and on every repair pass.
 */
export async function applyNorthbound(
  nbctl: NbCtl,
  desired: SwitchRows[],
  portGroups: PortGroupRow[] = [],
  known?: ActualNorthbound,
): Promise<NorthboundChanges> {
  const actual = known ?? await readNorthbound(nbctl);
  const cmds: string[][] = [];
  const changes: NorthboundChanges = { created: [], updated: [], deleted: [] };
  const wantedSwitches = new Set(desired.map((s) => s.name));
  const wantedPorts = new Set(desired.flatMap((s) => s.ports.map((p) => p.name)));

  for (const [name, sw] of actual.switches) {
    if (!wantedSwitches.has(name)) {
      cmds.push(["ls-del", sw.uuid]);
      changes.deleted.push(name);
    }
  }
  for (const [network, d] of actual.dhcp) {
    if (!desired.some((s) => s.network === network && s.dhcp)) {
      cmds.push(["dhcp-options-del", d.uuid]);
      changes.deleted.push(`dhcp:${network}`);
    }
  }
  for (const [name, p] of actual.ports) {
    // Ports of a deleted switch go with it.
    if (!wantedPorts.has(name) && wantedSwitches.has(switchName(p.network))) {
      cmds.push(["lsp-del", p.uuid]);
      changes.deleted.push(name);
    }
  }

  for (const sw of desired) {
    const owner = `external_ids:${OWNER_KEY}=${sw.network}`;
    if (!actual.switches.has(sw.name)) {
      cmds.push(["ls-add", sw.name], ["set", "Logical_Switch", sw.name, owner]);
      changes.created.push(sw.name);
    }
    const dhcpRef = dhcpCommands(sw, actual, cmds, changes);
    for (const p of sw.ports) {
      portCommands(sw, p, actual.ports.get(p.name), p.dhcp ? dhcpRef : null, cmds, changes);
    }
  }
  portGroupCommands(portGroups, actual, cmds, changes);
  if (cmds.length) await nbctl(cmds.flatMap((c) => ["--", ...c]));
  return changes;
}

/**
 * Port groups: made, deleted, their members set and their ACLs added or
 * removed one by one, so an unchanged rule's ACL (and its flows on every
 * host) is never replaced while another rule changes. Runs after the ports'
 * commands: a new NIC's port is created earlier in the same transaction.
 */
function portGroupCommands(
  desired: PortGroupRow[],
  actual: ActualNorthbound,
  cmds: string[][],
  changes: NorthboundChanges,
): void {
  const wanted = new Set(desired.map((g) => g.name));
  for (const [name, pg] of actual.portGroups) {
    if (!wanted.has(name)) {
      // Its ACLs are only referenced from it: OVSDB deletes them with it.
      cmds.push(["destroy", "Port_Group", pg.uuid]);
      changes.deleted.push(`pg:${name}`);
    }
  }
  let n = 0;
  for (const g of desired) {
    const have = actual.portGroups.get(g.name);
    const ref = have?.uuid ?? g.name;
    if (!have) {
      cmds.push(
        ["pg-add", g.name, ...g.ports],
        ["set", "Port_Group", g.name, `external_ids:${SG_OWNER_KEY}=${quote(g.group)}`],
      );
      changes.created.push(`pg:${g.name}`);
    } else if (have.ports.join(" ") !== g.ports.join(" ")) {
      cmds.push(
        g.ports.length
          ? ["pg-set-ports", g.name, ...g.ports]
          : ["clear", "Port_Group", ref, "ports"],
      );
      changes.updated.push(`pg:${g.name}`);
    }
    const haveAcls = new Set<string>();
    const wantAcls = new Set(g.acls.map(aclKey));
    for (const a of have?.acls ?? []) {
      const key = aclKey(a);
      // Not wanted, or a second copy someone made: either is drift.
      if (!wantAcls.has(key) || haveAcls.has(key)) {
        cmds.push(["remove", "Port_Group", ref, "acls", a.uuid]);
        changes.deleted.push(`acl:${g.name}:${a.match}`);
      }
      haveAcls.add(key);
    }
    for (const a of g.acls) {
      if (haveAcls.has(aclKey(a))) continue;
      const id = `@acl${n++}`;
      cmds.push([
        `--id=${id}`,
        "create",
        "ACL",
        `direction=${a.direction}`,
        `priority=${a.priority}`,
        `match=${quote(a.match)}`,
        `action=${a.action}`,
        `external_ids:${SG_OWNER_KEY}=${quote(g.group)}`,
      ], ["add", "Port_Group", ref, "acls", id]);
      changes.created.push(`acl:${g.name}:${a.match}`);
    }
  }
}

/** The network's DHCP_Options row (created or updated as needed); how ports refer to it. */
function dhcpCommands(
  sw: SwitchRows,
  actual: ActualNorthbound,
  cmds: string[][],
  changes: NorthboundChanges,
): string | null {
  if (!sw.dhcp) return null;
  const have = actual.dhcp.get(sw.network);
  const options = Object.entries(sw.dhcp.options).map(([k, v]) => `${k}=${quote(v)}`);
  if (!have) {
    const ref = `@dhcp_${sw.network.replace(/-/g, "_")}`;
    cmds.push([
      `--id=${ref}`,
      "create",
      "DHCP_Options",
      `cidr=${sw.dhcp.cidr}`,
      `external_ids:${OWNER_KEY}=${sw.network}`,
      ...options.map((o) => `options:${o}`),
    ]);
    changes.created.push(`dhcp:${sw.network}`);
    return ref;
  }
  if (have.cidr !== sw.dhcp.cidr || !sameMap(have.options, sw.dhcp.options)) {
    cmds.push([
      "set",
      "DHCP_Options",
      have.uuid,
      `cidr=${sw.dhcp.cidr}`,
      `options={${options.join(",")}}`,
    ]);
    changes.updated.push(`dhcp:${sw.network}`);
  }
  return have.uuid;
}

function portCommands(
  sw: SwitchRows,
  p: PortRow,
  have: ActualPort | undefined,
  dhcpRef: string | null,
  cmds: string[][],
  changes: NorthboundChanges,
): void {
  const columns = [
    `addresses=${quote(p.addresses)}`,
    `port_security=${p.portSecurity === null ? "[]" : quote(p.portSecurity)}`,
    `type=${quote(p.type)}`,
    `options={${Object.entries(p.options).map(([k, v]) => `${k}=${quote(v)}`).join(",")}}`,
    `tag=${p.tag === null ? "[]" : p.tag}`,
    `dhcpv4_options=${dhcpRef ?? "[]"}`,
    `external_ids:${OWNER_KEY}=${p.network}`,
  ];
  if (!have) {
    cmds.push(["lsp-add", sw.name, p.name], ["set", "Logical_Switch_Port", p.name, ...columns]);
    changes.created.push(p.name);
    return;
  }
  // A reference to DHCP options created in this transaction ("@...") is a change by itself.
  const sameDhcp = !dhcpRef?.startsWith("@") && have.dhcpUuid === dhcpRef;
  const same = have.addresses === p.addresses && have.portSecurity === p.portSecurity &&
    have.type === p.type && sameMap(have.options, p.options) && have.tag === p.tag && sameDhcp;
  if (!same) {
    cmds.push(["set", "Logical_Switch_Port", have.uuid, ...columns]);
    changes.updated.push(p.name);
  }
}

function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

/** A value as an OVSDB string in an `ovn-nbctl set` argument. */
function quote(v: string): string {
  return JSON.stringify(v);
}
