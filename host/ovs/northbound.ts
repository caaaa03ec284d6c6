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
 * @module
 */
import type { NetworkRecord } from "../../core/fsm/mod.ts";
import { firstHost, formatIpv4, parseCidr } from "../../core/network/mod.ts";

/** The external id that marks a row as novactl's, with the network it belongs to. */
export const OWNER_KEY = "novactl-network";
/** DHCP leases: an hour, renewed at half. */
const LEASE_SECONDS = 3600;

/** A NIC as the northbound database needs it. */
export interface NicPort {
  vm: string;
  nic: number;
  network: string;
  ip: string | null;
  mac: string;
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
    options: {},
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

export interface ActualNorthbound {
  switches: Map<string, { uuid: string; network: string }>;
  ports: Map<string, ActualPort>;
  dhcp: Map<string, { uuid: string; cidr: string; options: Record<string, string> }>;
}

/** Runs `ovn-nbctl` with these arguments and returns its stdout. */
export type NbCtl = (args: string[]) => Promise<string>;

/** novactl's rows in the northbound database. */
export async function readNorthbound(nbctl: NbCtl): Promise<ActualNorthbound> {
  const list = async (table: string, columns: string[]) => {
    const out = JSON.parse(
      await nbctl(["--format=json", `--columns=${columns.join(",")}`, "list", table]),
    ) as { headings: string[]; data: unknown[][] };
    return out.data.map((row) =>
      Object.fromEntries(out.headings.map((h, i) => [h, decode(row[i])]))
    ) as Record<string, unknown>[];
  };
  const owner = (r: Record<string, unknown>) =>
    (r.external_ids as Record<string, string>)[OWNER_KEY];
  const actual: ActualNorthbound = { switches: new Map(), ports: new Map(), dhcp: new Map() };
  for (const r of await list("Logical_Switch", ["_uuid", "name", "external_ids"])) {
    if (owner(r)) {
      actual.switches.set(String(r.name), { uuid: String(r._uuid), network: owner(r) });
    }
  }
  for (
    const r of await list("Logical_Switch_Port", [
      "_uuid",
      "name",
      "addresses",
      "port_security",
      "type",
      "options",
      "tag",
      "dhcpv4_options",
      "external_ids",
    ])
  ) {
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
  for (const r of await list("DHCP_Options", ["_uuid", "cidr", "options", "external_ids"])) {
    if (owner(r)) {
      actual.dhcp.set(owner(r), {
        uuid: String(r._uuid),
        cidr: String(r.cidr),
        options: r.options as Record<string, string>,
      });
    }
  }
  return actual;
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
 * Makes novactl's part of the northbound database equal `desired` in one
 * `ovn-nbctl` transaction; returns what it changed (nothing when equal).
 */
export async function applyNorthbound(
  nbctl: NbCtl,
  desired: SwitchRows[],
): Promise<NorthboundChanges> {
  const actual = await readNorthbound(nbctl);
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
  if (cmds.length) await nbctl(cmds.flatMap((c) => ["--", ...c]));
  return changes;
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
