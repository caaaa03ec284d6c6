/**
 * Networks and their ports: the replicated source of truth for virtual
 * networks, their subnets, and every address and MAC handed to a VM's NIC
 * (IPAM). OVN's databases are derived from this state by the leader (the
 * networking issue's design); nothing here talks to OVN.
 *
 * Everything that can race is decided here, while the entry is applied, in
 * log order on every member: two creates with overlapping subnets, two NICs
 * asking for one address, the lowest free address, the next MAC. So no
 * duplicate survives concurrency, and every member holds the same answer.
 *
 * @module
 */
import { ConflictError, NotFoundError, ValidationError } from "../errors/mod.ts";
import type { Command, NetworkSpec, NicRequest, VmNic } from "./commands.ts";
import {
  type Applied,
  applied,
  type Changed,
  type Resource,
  type Row,
  type Store,
} from "./store.ts";
import * as securityGroups from "./security_groups.ts";
import * as routers from "./routers.ts";
import {
  allocateIp,
  checkStaticIp,
  type Cidr,
  formatIpv4,
  macFromSequence,
  overlaps,
  parseCidr,
  parseIpv4,
  parseMac,
  parseReservedRanges,
} from "../network/mod.ts";

const TABLES = [
  {
    name: "networks",
    ddl:
      `CREATE TABLE IF NOT EXISTS networks (name TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);`,
  },
  {
    // One row per NIC: its address (as a number, so the lowest free one is found in order)
    // and its MAC, both unique where they must be.
    name: "network_ports",
    ddl: `CREATE TABLE IF NOT EXISTS network_ports (
      vm TEXT NOT NULL, nic INTEGER NOT NULL, network TEXT NOT NULL,
      ip INTEGER, mac TEXT NOT NULL UNIQUE,
      PRIMARY KEY (vm, nic), UNIQUE (network, ip));`,
  },
  {
    // Counters that only grow (the MAC sequence), so a deleted NIC's MAC is not handed out
    // again while switches and guests may still have it cached.
    name: "network_counters",
    ddl:
      `CREATE TABLE IF NOT EXISTS network_counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);`,
  },
];

/** A network as stored: its spec and when it was made. */
export interface NetworkRecord extends NetworkSpec {
  createdAt: number;
  by: string;
}

export function get(s: Store, name: string): NetworkRecord | null {
  const row = s.sql("SELECT data FROM networks WHERE name = ?").get(name) as Row | undefined;
  return row ? JSON.parse(String(row.data)) : null;
}

export function all(s: Store): NetworkRecord[] {
  return (s.sql("SELECT data FROM networks ORDER BY name").all() as Row[]).map((r) =>
    JSON.parse(String(r.data))
  );
}

/** The NICs on `network`, in VM and NIC order. */
export function ports(s: Store, network: string): (VmNic & { vm: string; nic: number })[] {
  const rows = s.sql(
    "SELECT vm, nic, network, ip, mac FROM network_ports WHERE network = ? ORDER BY vm, nic",
  ).all(network) as Row[];
  return rows.map((r) => ({
    vm: String(r.vm),
    nic: Number(r.nic),
    network: String(r.network),
    ip: r.ip === null ? null : formatIpv4(Number(r.ip)),
    mac: String(r.mac),
  }));
}

function create(s: Store, c: Extract<Command, { op: "network.create" }>): Applied {
  const n = c.network;
  if (get(s, n.name)) throw new ConflictError(`network "${n.name}" already exists`);
  const cidr = parseCidr(n.subnet, "subnet");
  for (const other of all(s)) {
    if (overlaps(cidr, parseCidr(other.subnet))) {
      throw new ConflictError(
        `subnet: ${cidr.text} overlaps network "${other.name}" (${other.subnet})`,
        { field: "subnet", network: other.name },
      );
    }
    if (n.vlan !== null && other.vlan === n.vlan && other.physnet === n.physnet) {
      throw new ConflictError(
        `vlan: ${n.vlan} on ${n.physnet} is already network "${other.name}"`,
        { field: "vlan", network: other.name },
      );
    }
  }
  if (n.gateway !== null) {
    checkStaticIp(cidr, parseIpv4(n.gateway, "gateway"), {
      gateway: null,
      taken: new Set(),
      reserved: [],
      network: n.name,
    }, "gateway");
  }
  parseReservedRanges(n.reserved, cidr, "reserved");
  const record: NetworkRecord = { ...n, subnet: cidr.text, createdAt: c.at, by: c.by };
  s.sql("INSERT INTO networks (name, data, created_at) VALUES (?, ?, ?)").run(
    n.name,
    JSON.stringify(record),
    c.at,
  );
  if (n.nat) routers.attachForNat(s, n.name, c.by, c.at);
  const changed: Changed[] = [{ resource: "network", name: n.name }];
  if (n.nat) changed.push({ resource: "router" });
  return applied(record, ...changed);
}

function remove(s: Store, c: Extract<Command, { op: "network.delete" }>): Applied {
  if (!get(s, c.name)) throw new NotFoundError("network", c.name);
  const users = [...new Set(ports(s, c.name).map((p) => p.vm))];
  if (users.length) {
    throw new ConflictError(
      `network "${c.name}" has NICs of ${users.length} VM(s): ${users.slice(0, 10).join(", ")}`,
      { vms: users },
    );
  }
  const routing = routers.networkUsers(s, c.name);
  if (routing.length) {
    throw new ConflictError(`network "${c.name}" is in use: ${routing.join("; ")}`, {
      users: routing,
    });
  }
  s.sql("DELETE FROM networks WHERE name = ?").run(c.name);
  return applied({ name: c.name, deleted: true }, { resource: "network", name: c.name });
}

/**
 * Gives each NIC `vm` asks for its address and MAC, and records them: the
 * asked-for ones if free, else the lowest free address and the next MAC.
 * Called while the VM's create is applied, so a refusal refuses the create.
 */
export function attachNics(s: Store, vm: string, requests: NicRequest[]): VmNic[] {
  return requests.map((req, i) => attachNic(s, vm, i, req, `nics[${i}]`));
}

/**
 * Gives NIC number `nic` of `vm` its address and MAC (as asked, else allocated) and records
 * it; `field` names the request in errors (`nics[0]`, `nic`). Throws, changing nothing the
 * caller's transaction keeps, when the network, address or MAC cannot be had.
 */
export function attachNic(
  s: Store,
  vm: string,
  nic: number,
  req: NicRequest,
  field: string,
): VmNic {
  const net = get(s, req.network);
  if (!net) {
    throw new ValidationError(`${field}.network: network "${req.network}" not found`, [{
      field: `${field}.network`,
      message: `network "${req.network}" not found`,
    }]);
  }
  const cidr = parseCidr(net.subnet);
  const ip = addressFor(s, net, cidr, req.ip ?? null, `${field}.ip`);
  const mac = req.mac ? parseMac(req.mac, `${field}.mac`) : nextMac(s);
  if (s.sql("SELECT 1 FROM network_ports WHERE mac = ?").get(mac)) {
    throw new ConflictError(`${field}.mac: ${mac} is already in use`, { field: `${field}.mac` });
  }
  s.sql("INSERT INTO network_ports (vm, nic, network, ip, mac) VALUES (?, ?, ?, ?, ?)").run(
    vm,
    nic,
    net.name,
    ip,
    mac,
  );
  const groups = securityGroups.attachNic(s, vm, nic, req.securityGroups, field);
  return {
    network: net.name,
    ip: ip === null ? null : formatIpv4(ip),
    mac,
    ...(groups.length ? { securityGroups: groups } : {}),
    index: nic,
  };
}

/**
 * The NIC's address: the asked-for one if it is free and allowed, else the lowest free one.
 * Networks without DHCP get addresses too: the guest (or cloud-init) sets them itself.
 */
function addressFor(
  s: Store,
  net: NetworkRecord,
  cidr: Cidr,
  asked: string | null,
  field: string,
): number | null {
  const taken = new Set(
    (s.sql("SELECT ip FROM network_ports WHERE network = ? AND ip IS NOT NULL").all(
      net.name,
    ) as Row[]).map((r) => Number(r.ip)),
  );
  // Routers' and floating IPs' addresses on an uplink are taken too.
  for (const ip of routers.addressesOn(s, net.name)) taken.add(ip);
  const usage = {
    gateway: net.gateway === null ? null : parseIpv4(net.gateway),
    taken,
    reserved: parseReservedRanges(net.reserved, cidr),
    network: net.name,
  };
  if (asked !== null) {
    const ip = parseIpv4(asked, field);
    checkStaticIp(cidr, ip, usage, field);
    return ip;
  }
  return allocateIp(cidr, usage);
}

/**
 * Takes an address of `network` for something other than a NIC (a router's
 * uplink port, a floating IP): `asked` if free and allowed, else the lowest
 * free one. The caller records it; {@link addressFor} counts it as taken
 * from then on (routers.addressesOn).
 * @throws ValidationError naming `field` (outside the subnet, reserved, the gateway)
 * @throws ConflictError when taken or when none is free
 */
export function takeAddress(
  s: Store,
  network: string,
  asked: string | null,
  field: string,
): number {
  const net = get(s, network);
  if (!net) throw ValidationError.field("network", `network "${network}" not found`);
  return addressFor(s, net, parseCidr(net.subnet), asked, field)!;
}

/** NIC `nic` of `vm`: its network and address, or null when it has none. */
export function portOf(
  s: Store,
  vm: string,
  nic: number,
): { network: string; ip: string | null; mac: string } | null {
  const r = s.sql("SELECT network, ip, mac FROM network_ports WHERE vm = ? AND nic = ?").get(
    vm,
    nic,
  ) as Row | undefined;
  if (!r) return null;
  return {
    network: String(r.network),
    ip: r.ip === null ? null : formatIpv4(Number(r.ip)),
    mac: String(r.mac),
  };
}

/** The next MAC of the sequence that no NIC holds (an operator may have chosen one of them). */
function nextMac(s: Store): string {
  const row = s.sql("SELECT value FROM network_counters WHERE key = 'mac'").get() as
    | Row
    | undefined;
  let n = row ? Number(row.value) : 0;
  let mac = macFromSequence(n++);
  while (s.sql("SELECT 1 FROM network_ports WHERE mac = ?").get(mac)) mac = macFromSequence(n++);
  s.sql(
    "INSERT INTO network_counters (key, value) VALUES ('mac', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
  ).run(n);
  return mac;
}

/** Frees NIC `nic` of `vm` (hot-unplugged): its address and MAC, and its group memberships. */
export function detachNic(s: Store, vm: string, nic: number): void {
  s.sql("DELETE FROM network_ports WHERE vm = ? AND nic = ?").run(vm, nic);
  securityGroups.detachNic(s, vm, nic);
}

/** Frees the addresses and MACs of a VM that is gone, and takes its NICs out of their groups. */
export function detachAll(s: Store, vm: string): void {
  s.sql("DELETE FROM network_ports WHERE vm = ?").run(vm);
  securityGroups.detachVm(s, vm);
  routers.detachVm(s, vm);
}

/** Networks and the NIC ports on them. */
export const resource: Resource<"network.create" | "network.delete"> = {
  tables: TABLES,
  appliers: { "network.create": create, "network.delete": remove },
};
