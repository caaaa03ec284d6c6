/**
 * Security groups: named sets of stateful allow rules, and which NICs are in
 * which group. The replicated source of truth; the leader derives OVN port
 * groups, ACLs and address sets from it (host/ovs/northbound.ts), so nothing
 * here talks to OVN.
 *
 * Semantics (the networking issue's): a NIC in at least one group has its
 * ingress denied except what some rule of one of its groups admits; its
 * egress is allowed, unless one of its groups has egress rules, in which case
 * only what those admit may leave. Replies to allowed traffic always pass
 * (the rules are stateful).
 *
 * What depends on other rows (a group in use, a rule naming a group, a
 * duplicate rule, the next rule id) is decided here, while the entry is
 * applied, so concurrent requests cannot leave a dangling reference.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { formatIpv4, parseIpv4 } from "../network/mod.ts";
import type { Command, SecurityGroupRuleSpec, SecurityGroupSpec } from "./commands.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

/** Group names: as network names, so a group maps to an OVN name without escaping clashes. */
export const SECURITY_GROUP_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Caps: every rule becomes ACL flows on every host that has a member port. */
export const SECURITY_GROUP_LIMITS = {
  groups: 1_000,
  rulesPerGroup: 1_000,
  groupsPerNic: 8,
  descriptionChars: 255,
} as const;

const TABLES = [
  {
    name: "security_groups",
    ddl:
      `CREATE TABLE IF NOT EXISTS security_groups (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);`,
  },
  {
    // `seq` orders rules as they were added and makes their ids (`r<seq>`).
    name: "security_group_rules",
    ddl: `CREATE TABLE IF NOT EXISTS security_group_rules (
      id TEXT PRIMARY KEY, sg TEXT NOT NULL, seq INTEGER NOT NULL UNIQUE, data TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS security_group_rules_sg ON security_group_rules (sg);`,
  },
  {
    name: "security_group_members",
    ddl: `CREATE TABLE IF NOT EXISTS security_group_members (
      vm TEXT NOT NULL, nic INTEGER NOT NULL, sg TEXT NOT NULL, PRIMARY KEY (vm, nic, sg));
      CREATE INDEX IF NOT EXISTS security_group_members_sg ON security_group_members (sg);`,
  },
  {
    // The rule id sequence only grows: a removed rule's id is never handed out again, so a
    // script that removes "r7" twice cannot remove someone else's rule the second time.
    name: "security_group_counters",
    ddl:
      `CREATE TABLE IF NOT EXISTS security_group_counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);`,
  },
];

/** A security group as stored. */
export interface SecurityGroupRecord extends SecurityGroupSpec {
  createdAt: number;
  by: string;
}

/** A rule as stored: its spec, id and group. */
export interface SecurityGroupRule extends SecurityGroupRuleSpec {
  id: string;
  group: string;
  createdAt: number;
  by: string;
}

/** A NIC in a group. */
export interface SecurityGroupMember {
  vm: string;
  nic: number;
  group: string;
}

export function get(s: Store, name: string): SecurityGroupRecord | null {
  const row = s.sql("SELECT data FROM security_groups WHERE name = ?").get(name) as
    | Row
    | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

export function all(s: Store): SecurityGroupRecord[] {
  return (s.sql("SELECT data FROM security_groups ORDER BY name").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

/** The rules of `group` (every group's when null), in the order they were added. */
export function rules(s: Store, group: string | null): SecurityGroupRule[] {
  const rows = group === null
    ? s.sql("SELECT data FROM security_group_rules ORDER BY seq").all() as Row[]
    : s.sql("SELECT data FROM security_group_rules WHERE sg = ? ORDER BY seq").all(
      group,
    ) as Row[];
  return rows.map((r) => JSON.parse(String(r.data)));
}

/** The NICs in `group` (every group's when null), in group, VM and NIC order. */
export function members(s: Store, group: string | null): SecurityGroupMember[] {
  const rows = group === null
    ? s.sql("SELECT vm, nic, sg FROM security_group_members ORDER BY sg, vm, nic").all() as Row[]
    : s.sql("SELECT vm, nic, sg FROM security_group_members WHERE sg = ? ORDER BY vm, nic").all(
      group,
    ) as Row[];
  return rows.map((r) => ({ vm: String(r.vm), nic: Number(r.nic), group: String(r.sg) }));
}

/** Read-only access for callers outside the state machine (API, the leader's OVN pass). */
export interface SecurityGroupReads {
  get(name: string): SecurityGroupRecord | null;
  all(): SecurityGroupRecord[];
  rules(group: string | null): SecurityGroupRule[];
  members(group: string | null): SecurityGroupMember[];
}

export function readsOf(s: Store): SecurityGroupReads {
  return {
    get: (name) => get(s, name),
    all: () => all(s),
    rules: (group) => rules(s, group),
    members: (group) => members(s, group),
  };
}

// ---- validation (the API checks early with the same functions) ----------------------------

/** An IPv4 CIDR for a rule's remote: any prefix 0..32, no host bits; canonical text. */
export function parseRemoteCidr(text: string, field = "remoteCidr"): string {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!m || Number(m[2]) > 32 || (m[2].length > 1 && m[2][0] === "0")) {
    throw ValidationError.field(field, `"${text}" is not an IPv4 CIDR block (a.b.c.d/0-32)`);
  }
  const addr = parseIpv4(m[1], field);
  const prefix = Number(m[2]);
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const network = (addr & mask) >>> 0;
  if (network !== addr) {
    throw ValidationError.field(
      field,
      `${text} has host bits set; did you mean ${formatIpv4(network)}/${prefix}?`,
    );
  }
  return `${formatIpv4(network)}/${prefix}`;
}

/** Throws a ValidationError naming the field when `r` is not a rule that can be enforced. */
export function checkRule(r: SecurityGroupRuleSpec): SecurityGroupRuleSpec {
  if (r.direction !== "ingress" && r.direction !== "egress") {
    throw ValidationError.field("direction", "ingress or egress");
  }
  if (!["tcp", "udp", "icmp", "any"].includes(r.protocol)) {
    throw ValidationError.field("protocol", "tcp, udp, icmp or any");
  }
  const ports = r.portMin !== null || r.portMax !== null;
  if (ports) {
    if (r.protocol !== "tcp" && r.protocol !== "udp") {
      throw ValidationError.field("port", `a port needs protocol tcp or udp, not ${r.protocol}`);
    }
    const valid = (p: number | null) => Number.isInteger(p) && p! >= 1 && p! <= 65_535;
    if (!valid(r.portMin) || !valid(r.portMax)) {
      throw ValidationError.field("port", "ports are whole numbers 1-65535");
    }
    if (r.portMin! > r.portMax!) {
      throw ValidationError.field("port", `range ${r.portMin}-${r.portMax} ends before it starts`);
    }
  }
  if (r.remoteCidr !== null && r.remoteGroup !== null) {
    throw ValidationError.field("remote", "give a remote CIDR or a remote group, not both");
  }
  const remoteCidr = r.remoteCidr === null ? null : parseRemoteCidr(r.remoteCidr, "remote");
  return {
    direction: r.direction,
    protocol: r.protocol,
    portMin: ports ? r.portMin : null,
    portMax: ports ? r.portMax : null,
    remoteCidr,
    remoteGroup: r.remoteGroup,
  };
}

/** The rule's identity for duplicate checks: everything but its id. */
function ruleKey(r: SecurityGroupRuleSpec): string {
  return JSON.stringify([
    r.direction,
    r.protocol,
    r.portMin,
    r.portMax,
    r.remoteCidr,
    r.remoteGroup,
  ]);
}

// ---- appliers ---------------------------------------------------------------------------

function create(s: Store, c: Extract<Command, { op: "sg.create" }>): Applied {
  const g = c.group;
  if (!SECURITY_GROUP_NAME.test(g.name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  if (get(s, g.name)) {
    throw new ConflictError(`name: security group "${g.name}" already exists`, { field: "name" });
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM security_groups").get() as Row).n);
  if (count >= SECURITY_GROUP_LIMITS.groups) {
    throw new ConflictError(`at most ${SECURITY_GROUP_LIMITS.groups} security groups`);
  }
  const record: SecurityGroupRecord = {
    name: g.name,
    description: String(g.description ?? "").slice(0, SECURITY_GROUP_LIMITS.descriptionChars),
    createdAt: c.at,
    by: c.by,
  };
  s.sql("INSERT INTO security_groups (name, data, created_at) VALUES (?, ?, ?)").run(
    g.name,
    JSON.stringify(record),
    c.at,
  );
  return applied(record, { resource: "securityGroup", name: g.name });
}

function remove(s: Store, c: Extract<Command, { op: "sg.delete" }>): Applied {
  if (!get(s, c.name)) throw new NotFoundError("security group", c.name);
  const users = [...new Set(members(s, c.name).map((m) => m.vm))];
  if (users.length) {
    throw new ConflictError(
      `security group "${c.name}" is in use by NICs of ${users.length} VM(s): ${
        users.slice(0, 10).join(", ")
      }`,
      { vms: users },
    );
  }
  const referring = (s.sql(
    "SELECT id, sg FROM security_group_rules WHERE sg != ? AND json_extract(data, '$.remoteGroup') = ? ORDER BY seq",
  ).all(c.name, c.name) as Row[]).map((r) => ({ group: String(r.sg), rule: String(r.id) }));
  if (referring.length) {
    throw new ConflictError(
      `security group "${c.name}" is the remote of rule(s) ${
        referring.slice(0, 10).map((r) => `${r.rule} of "${r.group}"`).join(", ")
      }`,
      { rules: referring },
    );
  }
  s.sql("DELETE FROM security_group_rules WHERE sg = ?").run(c.name);
  s.sql("DELETE FROM security_groups WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "securityGroup", name: c.name });
}

function addRule(s: Store, c: Extract<Command, { op: "sg.rule.add" }>): Applied {
  if (!get(s, c.group)) throw new NotFoundError("security group", c.group);
  const spec = checkRule(c.rule);
  if (spec.remoteGroup !== null && !get(s, spec.remoteGroup)) {
    throw ValidationError.field(
      "remoteGroup",
      `security group "${spec.remoteGroup}" not found`,
    );
  }
  const existing = rules(s, c.group);
  const same = existing.find((r) => ruleKey(r) === ruleKey(spec));
  if (same) {
    throw new ConflictError(`security group "${c.group}" already has this rule: ${same.id}`, {
      rule: same.id,
    });
  }
  if (existing.length >= SECURITY_GROUP_LIMITS.rulesPerGroup) {
    throw new ConflictError(
      `security group "${c.group}" has ${existing.length} rules, the most a group may have`,
    );
  }
  const seq = nextSeq(s);
  const rule: SecurityGroupRule = {
    id: `r${seq}`,
    group: c.group,
    ...spec,
    createdAt: c.at,
    by: c.by,
  };
  s.sql("INSERT INTO security_group_rules (id, sg, seq, data) VALUES (?, ?, ?, ?)").run(
    rule.id,
    c.group,
    seq,
    JSON.stringify(rule),
  );
  return applied(rule, { resource: "securityGroup", name: c.group });
}

function removeRule(s: Store, c: Extract<Command, { op: "sg.rule.remove" }>): Applied {
  if (!get(s, c.group)) throw new NotFoundError("security group", c.group);
  const gone = s.sql("DELETE FROM security_group_rules WHERE id = ? AND sg = ?").run(
    c.id,
    c.group,
  );
  if (!Number(gone.changes)) throw new NotFoundError("security group rule", `${c.group}/${c.id}`);
  return applied({ group: c.group, id: c.id, deleted: true }, {
    resource: "securityGroup",
    name: c.group,
  });
}

function nextSeq(s: Store): number {
  const row = s.sql("SELECT value FROM security_group_counters WHERE key = 'rule'").get() as
    | Row
    | undefined;
  const n = (row ? Number(row.value) : 0) + 1;
  s.sql(
    "INSERT INTO security_group_counters (key, value) VALUES ('rule', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
  ).run(n);
  return n;
}

// ---- NICs -------------------------------------------------------------------------------

/**
 * Puts NIC `nic` of `vm` in `groups` (each must exist); returns the groups,
 * deduplicated, as recorded. Called while the VM's create is applied, so a
 * refusal refuses the create. `field` names the NIC in errors (`nics[0]`).
 */
export function attachNic(
  s: Store,
  vm: string,
  nic: number,
  groups: string[] | undefined,
  field: string,
): string[] {
  const list = [...new Set(groups ?? [])];
  const at = `${field}.securityGroups`;
  if (list.length > SECURITY_GROUP_LIMITS.groupsPerNic) {
    throw ValidationError.field(at, `at most ${SECURITY_GROUP_LIMITS.groupsPerNic} groups`);
  }
  for (const g of list) {
    if (!get(s, g)) throw ValidationError.field(at, `security group "${g}" not found`);
    s.sql("INSERT INTO security_group_members (vm, nic, sg) VALUES (?, ?, ?)").run(vm, nic, g);
  }
  return list;
}

/** Takes one NIC of `vm` (hot-unplugged) out of every group. */
export function detachNic(s: Store, vm: string, nic: number): void {
  s.sql("DELETE FROM security_group_members WHERE vm = ? AND nic = ?").run(vm, nic);
}

/** Takes a VM that is gone out of every group. */
export function detachVm(s: Store, vm: string): void {
  s.sql("DELETE FROM security_group_members WHERE vm = ?").run(vm);
}

/** Security groups, their rules, and which NICs are in them. */
export const resource: Resource<"sg.create" | "sg.delete" | "sg.rule.add" | "sg.rule.remove"> = {
  tables: TABLES,
  appliers: {
    "sg.create": create,
    "sg.delete": remove,
    "sg.rule.add": addRule,
    "sg.rule.remove": removeRule,
  },
};
