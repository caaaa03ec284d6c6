/**
 * Routers and floating IPs: the replicated source of truth for which
 * networks a router connects, its uplink (a flat or vlan network) with its
 * address there, and the floating IPs on uplinks with the NIC each points at.
 * The leader derives OVN logical routers, gateway ports, SNAT and
 * dnat_and_snat rows from it (host/ovs/northbound_routers.ts); nothing here
 * talks to OVN.
 *
 * Addresses on an uplink (a router's, a floating IP's) come from the
 * uplink's IPAM, as NIC addresses do (networks.ts counts them as taken), so
 * no VM, router or floating IP ever shares one. Every check that depends on
 * other rows (a network already behind a router, a floating IP whose NIC has
 * no way to its uplink) is decided while the entry is applied.
 *
 * Invariants, kept by the appliers:
 * - a network is attached to at most one router, and is never both attached
 *   to a router and an uplink of one;
 * - an attached floating IP's NIC is on a network attached to a router whose
 *   uplink is the floating IP's network (detach, uplink changes and router
 *   deletes that would break this are refused; a deleted VM lets go of it).
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import { formatIpv4 } from "../network/mod.ts";
import type { Command, RouterSpec } from "./commands.ts";
import * as networks from "./networks.ts";
import { type Applied, applied, type Resource, type Row, type Store } from "./store.ts";

/** Router names: as network names, so an OVN name made from one never needs escaping. */
export const ROUTER_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Caps: each router is a datapath on every host with a port behind it. */
export const ROUTER_LIMITS = { routers: 256, floatingIps: 4_096 } as const;

const TABLES = [
  {
    // uplink_ip as a number: networks.ts reads it as a taken address of the uplink.
    name: "routers",
    ddl: `CREATE TABLE IF NOT EXISTS routers (
      name TEXT PRIMARY KEY, uplink TEXT, uplink_ip INTEGER, data TEXT NOT NULL,
      created_at INTEGER NOT NULL);`,
  },
  {
    // One row per attached network: the primary key makes "one router per network" hold.
    name: "router_interfaces",
    ddl: `CREATE TABLE IF NOT EXISTS router_interfaces (
      network TEXT PRIMARY KEY, router TEXT NOT NULL, at INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS router_interfaces_router ON router_interfaces (router);`,
  },
  {
    name: "floating_ips",
    ddl: `CREATE TABLE IF NOT EXISTS floating_ips (
      ip TEXT PRIMARY KEY, network TEXT NOT NULL, ipnum INTEGER NOT NULL,
      vm TEXT, nic INTEGER, data TEXT NOT NULL, UNIQUE (network, ipnum));
      CREATE INDEX IF NOT EXISTS floating_ips_vm ON floating_ips (vm);`,
  },
];

/** A router as stored, with the networks attached to it. */
export interface RouterRecord extends RouterSpec {
  /** Attached networks, by name. */
  networks: string[];
  createdAt: number;
  by: string;
}

/** A floating IP: an address on an uplink, and the NIC it forwards to (null: none). */
export interface FloatingIpRecord {
  ip: string;
  network: string;
  vm: string | null;
  nic: number | null;
  createdAt: number;
  by: string;
}

type StoredRouter = Omit<RouterRecord, "networks">;

export function get(s: Store, name: string): RouterRecord | null {
  const row = s.sql("SELECT data FROM routers WHERE name = ?").get(name) as Row | undefined;
  return row ? withNetworks(s, JSON.parse(String(row.data))) : null;
}

export function all(s: Store): RouterRecord[] {
  return (s.sql("SELECT data FROM routers ORDER BY name").all() as Row[]).map((r) =>
    withNetworks(s, JSON.parse(String(r.data)))
  );
}

function withNetworks(s: Store, r: StoredRouter): RouterRecord {
  const nets = (s.sql("SELECT network FROM router_interfaces WHERE router = ? ORDER BY network")
    .all(r.name) as Row[]).map((x) => String(x.network));
  return { ...r, networks: nets };
}

/** The router `network` is attached to, or null. */
export function routerOf(s: Store, network: string): string | null {
  const row = s.sql("SELECT router FROM router_interfaces WHERE network = ?").get(network) as
    | Row
    | undefined;
  return row ? String(row.router) : null;
}

export function floatingIp(s: Store, ip: string): FloatingIpRecord | null {
  const row = s.sql("SELECT data, vm, nic FROM floating_ips WHERE ip = ?").get(ip) as
    | Row
    | undefined;
  return row ? fipOf(row) : null;
}

/** Floating IPs, in network and address order. */
export function floatingIps(s: Store): FloatingIpRecord[] {
  return (s.sql("SELECT data, vm, nic FROM floating_ips ORDER BY network, ipnum").all() as Row[])
    .map(fipOf);
}

function fipOf(r: Row): FloatingIpRecord {
  const data = JSON.parse(String(r.data)) as FloatingIpRecord;
  return {
    ...data,
    vm: r.vm === null ? null : String(r.vm),
    nic: r.nic === null ? null : Number(r.nic),
  };
}

/** Addresses of `network` routers and floating IPs hold (networks.ts: taken for NICs too). */
export function addressesOn(s: Store, network: string): number[] {
  return (s.sql(
    `SELECT uplink_ip AS ip FROM routers WHERE uplink = ? AND uplink_ip IS NOT NULL
     UNION ALL SELECT ipnum AS ip FROM floating_ips WHERE network = ?`,
  ).all(network, network) as Row[]).map((r) => Number(r.ip));
}

/** What keeps `network` from being deleted: routers attached to it or using it as uplink, FIPs. */
export function networkUsers(s: Store, network: string): string[] {
  const users: string[] = [];
  const attached = routerOf(s, network);
  if (attached) users.push(`router "${attached}" is attached to it`);
  for (
    const r of s.sql("SELECT name FROM routers WHERE uplink = ? ORDER BY name").all(
      network,
    ) as Row[]
  ) {
    users.push(`router "${r.name}" uses it as uplink`);
  }
  const fips = Number(
    (s.sql("SELECT COUNT(*) AS n FROM floating_ips WHERE network = ?").get(network) as Row).n,
  );
  if (fips) users.push(`${fips} floating IP(s) are on it`);
  return users;
}

/** Read-only access for callers outside the state machine (API, the leader's OVN pass). */
export interface RouterReads {
  get(name: string): RouterRecord | null;
  all(): RouterRecord[];
  floatingIp(ip: string): FloatingIpRecord | null;
  floatingIps(): FloatingIpRecord[];
}

export function readsOf(s: Store): RouterReads {
  return {
    get: (name) => get(s, name),
    all: () => all(s),
    floatingIp: (ip) => floatingIp(s, ip),
    floatingIps: () => floatingIps(s),
  };
}

// ---- checks ------------------------------------------------------------------------------

/** An existing flat or vlan network that can be an uplink, named by `field` when refused. */
function uplinkNetwork(s: Store, name: string, field: string): networks.NetworkRecord {
  const net = networks.get(s, name);
  if (!net) throw ValidationError.field(field, `network "${name}" not found`);
  if (net.type === "overlay") {
    throw ValidationError.field(
      field,
      `network "${name}" is an overlay network; an uplink is a flat or vlan network`,
    );
  }
  const attached = routerOf(s, name);
  if (attached) {
    throw new ConflictError(
      `${field}: network "${name}" is attached to router "${attached}"; it cannot also be an uplink`,
      { field },
    );
  }
  return net;
}

/** Floating IPs whose NIC sits on a network attached to `router` (optionally: only `network`). */
function fipsThrough(s: Store, router: string, network?: string): string[] {
  const nets = new Set(
    (s.sql("SELECT network FROM router_interfaces WHERE router = ?").all(router) as Row[])
      .map((r) => String(r.network)).filter((n) => network === undefined || n === network),
  );
  return floatingIps(s).filter((f) =>
    f.vm !== null && nets.has(networks.portOf(s, f.vm, f.nic!)?.network ?? "")
  ).map((f) => f.ip);
}

function refuseWithFips(ips: string[], what: string): void {
  if (ips.length) {
    throw new ConflictError(
      `${what}: floating IP(s) ${
        ips.slice(0, 10).join(", ")
      } reach their VMs through it; detach them first`,
      { floatingIps: ips },
    );
  }
}

// ---- appliers ---------------------------------------------------------------------------

function save(s: Store, r: StoredRouter, ip: number | null, created: number): void {
  s.sql(
    `INSERT INTO routers (name, uplink, uplink_ip, data, created_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT(name) DO UPDATE SET uplink = excluded.uplink, uplink_ip = excluded.uplink_ip,
       data = excluded.data`,
  ).run(r.name, r.uplink, ip, JSON.stringify(r), created);
}

function create(s: Store, c: Extract<Command, { op: "router.create" }>): Applied {
  const r = c.router;
  if (!ROUTER_NAME.test(r.name)) {
    throw ValidationError.field("name", "lowercase letters, digits and '-' (1-63 chars)");
  }
  if (get(s, r.name)) {
    throw new ConflictError(`name: router "${r.name}" already exists`, { field: "name" });
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM routers").get() as Row).n);
  if (count >= ROUTER_LIMITS.routers) {
    throw new ConflictError(`at most ${ROUTER_LIMITS.routers} routers`);
  }
  let ip: number | null = null;
  if (r.uplink !== null) {
    uplinkNetwork(s, r.uplink, "uplink");
    ip = networks.takeAddress(s, r.uplink, r.uplinkIp, "uplinkIp");
  } else if (r.uplinkIp !== null) {
    throw ValidationError.field("uplinkIp", "an uplink address needs an uplink network");
  }
  const record: StoredRouter = {
    name: r.name,
    uplink: r.uplink,
    uplinkIp: ip === null ? null : formatIpv4(ip),
    snat: r.snat,
    createdAt: c.at,
    by: c.by,
  };
  save(s, record, ip, c.at);
  return applied(withNetworks(s, record), { resource: "router", name: r.name });
}

function remove(s: Store, c: Extract<Command, { op: "router.delete" }>): Applied {
  const r = get(s, c.name);
  if (!r) throw new NotFoundError("router", c.name);
  if (r.networks.length) {
    throw new ConflictError(
      `router "${c.name}" is attached to network(s) ${r.networks.join(", ")}; detach them first`,
      { networks: r.networks },
    );
  }
  s.sql("DELETE FROM routers WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "router", name: c.name });
}

function attach(s: Store, c: Extract<Command, { op: "router.attach" }>): Applied {
  const r = get(s, c.router);
  if (!r) throw new NotFoundError("router", c.router);
  const net = networks.get(s, c.network);
  if (!net) throw ValidationError.field("network", `network "${c.network}" not found`);
  const other = routerOf(s, c.network);
  if (other) {
    throw new ConflictError(
      `network: network "${c.network}" is already attached to router "${other}"`,
      { field: "network", router: other },
    );
  }
  const uplinkOf = s.sql("SELECT name FROM routers WHERE uplink = ? LIMIT 1").get(c.network) as
    | Row
    | undefined;
  if (uplinkOf) {
    throw new ConflictError(
      `network: network "${c.network}" is the uplink of router "${uplinkOf.name}"`,
      { field: "network", router: String(uplinkOf.name) },
    );
  }
  if (net.gateway === null) {
    // The router's port on a network is its gateway address: the one DHCP hands out.
    throw ValidationError.field(
      "network",
      `network "${c.network}" has no gateway address for the router's port`,
    );
  }
  s.sql("INSERT INTO router_interfaces (network, router, at) VALUES (?, ?, ?)").run(
    c.network,
    c.router,
    c.at,
  );
  return applied(get(s, c.router), { resource: "router", name: c.router });
}

function detach(s: Store, c: Extract<Command, { op: "router.detach" }>): Applied {
  if (!get(s, c.router)) throw new NotFoundError("router", c.router);
  if (routerOf(s, c.network) !== c.router) {
    throw new NotFoundError("router interface", `${c.router}/${c.network}`);
  }
  refuseWithFips(fipsThrough(s, c.router, c.network), `network "${c.network}"`);
  s.sql("DELETE FROM router_interfaces WHERE network = ?").run(c.network);
  return applied(get(s, c.router), { resource: "router", name: c.router });
}

function setUplink(s: Store, c: Extract<Command, { op: "router.uplink" }>): Applied {
  const r = get(s, c.router);
  if (!r) throw new NotFoundError("router", c.router);
  if (c.uplink === r.uplink && (c.ip === null || c.ip === r.uplinkIp)) return applied(r);
  if (r.uplink !== null) refuseWithFips(fipsThrough(s, c.router), `router "${c.router}"`);
  let ip: number | null = null;
  if (c.uplink !== null) {
    uplinkNetwork(s, c.uplink, "uplink");
    // Its own old address is free for it again when it stays on the same uplink.
    s.sql("UPDATE routers SET uplink_ip = NULL WHERE name = ?").run(c.router);
    ip = networks.takeAddress(s, c.uplink, c.ip, "uplinkIp");
  } else if (c.ip !== null) {
    throw ValidationError.field("uplinkIp", "an uplink address needs an uplink network");
  }
  const { networks: _, ...stored } = r;
  const record: StoredRouter = {
    ...stored,
    uplink: c.uplink,
    uplinkIp: ip === null ? null : formatIpv4(ip),
  };
  save(s, record, ip, r.createdAt);
  return applied(withNetworks(s, record), { resource: "router", name: c.router });
}

function createFip(s: Store, c: Extract<Command, { op: "fip.create" }>): Applied {
  const net = networks.get(s, c.network);
  if (!net) throw ValidationError.field("network", `network "${c.network}" not found`);
  if (net.type === "overlay") {
    throw ValidationError.field(
      "network",
      `network "${c.network}" is an overlay network; floating IPs live on a flat or vlan uplink`,
    );
  }
  const count = Number((s.sql("SELECT COUNT(*) AS n FROM floating_ips").get() as Row).n);
  if (count >= ROUTER_LIMITS.floatingIps) {
    throw new ConflictError(`at most ${ROUTER_LIMITS.floatingIps} floating IPs`);
  }
  const ipnum = networks.takeAddress(s, c.network, c.ip, "ip");
  const record: FloatingIpRecord = {
    ip: formatIpv4(ipnum),
    network: c.network,
    vm: null,
    nic: null,
    createdAt: c.at,
    by: c.by,
  };
  s.sql(
    "INSERT INTO floating_ips (ip, network, ipnum, vm, nic, data) VALUES (?, ?, ?, NULL, NULL, ?)",
  ).run(record.ip, c.network, ipnum, JSON.stringify(record));
  return applied(record, { resource: "floatingIp", name: record.ip });
}

function deleteFip(s: Store, c: Extract<Command, { op: "fip.delete" }>): Applied {
  if (!floatingIp(s, c.ip)) throw new NotFoundError("floating IP", c.ip);
  s.sql("DELETE FROM floating_ips WHERE ip = ?").run(c.ip);
  return applied({ ip: c.ip, deleted: true }, { resource: "floatingIp", name: c.ip });
}

function attachFip(s: Store, c: Extract<Command, { op: "fip.attach" }>): Applied {
  const fip = floatingIp(s, c.ip);
  if (!fip) throw new NotFoundError("floating IP", c.ip);
  const port = networks.portOf(s, c.vm, c.nic);
  if (!port) {
    throw ValidationError.field("vm", `VM "${c.vm}" has no NIC ${c.nic} on a network`);
  }
  if (port.ip === null) {
    throw ValidationError.field("vm", `NIC ${c.nic} of "${c.vm}" has no address`);
  }
  const router = routerOf(s, port.network);
  const r = router ? get(s, router) : null;
  if (!r || r.uplink !== fip.network) {
    throw new ConflictError(
      `vm: network "${port.network}" of ${c.vm}:${c.nic} is not attached to a router with uplink "${fip.network}"`,
      { field: "vm", network: port.network },
    );
  }
  // Its own state only after the target's: a bad target is refused as such, attached or not.
  if (fip.vm !== null && (fip.vm !== c.vm || fip.nic !== c.nic)) {
    throw new ConflictError(
      `floating IP ${c.ip} is attached to ${fip.vm}:${fip.nic}; detach it first`,
      { vm: fip.vm, nic: fip.nic },
    );
  }
  const other = s.sql("SELECT ip FROM floating_ips WHERE vm = ? AND nic = ? AND ip != ?").get(
    c.vm,
    c.nic,
    c.ip,
  ) as Row | undefined;
  if (other) {
    throw new ConflictError(`vm: ${c.vm}:${c.nic} already has floating IP ${other.ip}`, {
      field: "vm",
      floatingIp: String(other.ip),
    });
  }
  s.sql("UPDATE floating_ips SET vm = ?, nic = ? WHERE ip = ?").run(c.vm, c.nic, c.ip);
  return applied(floatingIp(s, c.ip), { resource: "floatingIp", name: c.ip });
}

function detachFip(s: Store, c: Extract<Command, { op: "fip.detach" }>): Applied {
  if (!floatingIp(s, c.ip)) throw new NotFoundError("floating IP", c.ip);
  s.sql("UPDATE floating_ips SET vm = NULL, nic = NULL WHERE ip = ?").run(c.ip);
  return applied(floatingIp(s, c.ip), { resource: "floatingIp", name: c.ip });
}

/**
 * `network create --nat`: the new network is attached to the cluster's one
 * router with an uplink and SNAT, so its guests reach the outside. Called while
 * the network's create is applied: no such router (or several to choose from)
 * refuses the create, naming `nat`.
 */
export function attachForNat(s: Store, network: string, by: string, at: number): void {
  const candidates = all(s).filter((r) => r.uplink !== null && r.snat);
  if (candidates.length !== 1) {
    throw ValidationError.field(
      "nat",
      candidates.length
        ? `routers ${
          candidates.map((r) => r.name).join(", ")
        } have an uplink with SNAT: create the network without --nat and use router attach`
        : "no router has an uplink with SNAT: create one (router create NAME --uplink NETWORK)",
    );
  }
  attach(s, { op: "router.attach", router: candidates[0].name, network, by, at });
}

/** A VM that is gone lets go of its floating IPs (they stay allocated, unattached). */
export function detachVm(s: Store, vm: string): void {
  s.sql("UPDATE floating_ips SET vm = NULL, nic = NULL WHERE vm = ?").run(vm);
}

/** Routers, their attached networks and uplinks, and floating IPs. */
export const resource: Resource<
  | "router.create"
  | "router.delete"
  | "router.attach"
  | "router.detach"
  | "router.uplink"
  | "fip.create"
  | "fip.delete"
  | "fip.attach"
  | "fip.detach"
> = {
  tables: TABLES,
  appliers: {
    "router.create": create,
    "router.delete": remove,
    "router.attach": attach,
    "router.detach": detach,
    "router.uplink": setUplink,
    "fip.create": createFip,
    "fip.delete": deleteFip,
    "fip.attach": attachFip,
    "fip.detach": detachFip,
  },
};

/**
 * The hosts that carry `router`'s gateway port, highest priority first: every
 * host that maps the uplink's physnet (`hosts`, in name order), rotated by a
 * hash of the router's name so that routers spread their active gateways
 * over the hosts instead of all piling onto the first. OVN moves a gateway
 * to the next in this order when BFD finds the active one dead.
 */
export function gatewayOrder(router: string, hosts: readonly string[]): string[] {
  if (!hosts.length) return [];
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(router)) h = Math.imul(h ^ ch, 0x01000193) >>> 0;
  const k = h % hosts.length;
  return [...hosts.slice(k), ...hosts.slice(0, k)];
}
