/**
 * Routers in OVN's northbound database, derived as switches are
 * (./northbound.ts): what the replicated routers and floating IPs
 * (core/fsm/routers.ts) say it must hold, what it holds, and one `ovn-nbctl`
 * transaction between the two. Rows novactl did not make (no
 * `novactl-router` external id) are left alone.
 *
 * A router `R` becomes the logical router `nvr-R` with:
 * - a port `nvr-R_NET` on each attached network, at the network's gateway
 *   address (the router DHCP hands out), joined to the network's switch by
 *   the switch port `nvrp-R_NET` (type router);
 * - with an uplink, the gateway port `nvr-R.uplink` at the router's uplink
 *   address, on the uplink's switch through `nvrp-R.uplink`, with a
 *   Gateway_Chassis row per host that maps the uplink's physnet (priority
 *   highest first, core/fsm/routers.ts gatewayOrder). OVN makes the highest
 *   live one active and moves it when BFD finds that host dead; the switch
 *   port's `nat-addresses=router` makes the new active host announce the
 *   router's and the floating IPs' addresses (gratuitous ARP), so the
 *   upstream's switches learn where they went at once;
 * - a default route to the uplink's gateway, an `snat` of each attached
 *   subnet to the uplink address, and a `dnat_and_snat` per attached
 *   floating IP. NAT is centralized on the active gateway host (no
 *   logical_port): a VM's host needs no uplink of its own, and failover
 *   moves every floating IP with the gateway.
 *
 * Names cannot collide: network and router names have no `_` or `.`.
 *
 * @module
 */
import type { NetworkRecord, StateMachine } from "../../core/fsm/mod.ts";
import { gatewayOrder } from "../../core/fsm/routers.ts";
import { parseCidr } from "../../core/network/mod.ts";
import type { NbCtl, NorthboundChanges } from "./northbound.ts";
import { switchName } from "./northbound.ts";

/** The external id that marks a row as novactl's router's, with the router it belongs to. */
export const ROUTER_OWNER_KEY = "novactl-router";

/** What the derivation needs of one router, resolved from the replicated state. */
export interface RouterInput {
  name: string;
  snat: boolean;
  /** Networks attached to it (each with a gateway address). */
  networks: NetworkRecord[];
  /** Its uplink, its address there and the hosts for its gateway, highest priority first. */
  uplink: { network: NetworkRecord; ip: string; chassis: string[] } | null;
  /** Attached floating IPs: the uplink address and the NIC address it forwards to. */
  floatingIps: { external: string; logical: string }[];
}

/** What {@link routerInputs} reads of the replicated state. */
export type RouterState = Pick<
  StateMachine,
  "routers" | "network" | "networkPorts" | "hostsMapping"
>;

/**
 * The routers as the derivation needs them, resolved from the replicated
 * state: networks by record, the gateway hosts in priority order, each
 * attached floating IP with its NIC's address. A floating IP whose NIC is
 * gone or no longer behind the router is left out (the state machine refuses
 * to make one, this is the belt to those braces).
 */
export function routerInputs(state: RouterState): RouterInput[] {
  const fips = state.routers.floatingIps().filter((f) => f.vm !== null);
  return state.routers.all().map((r) => {
    const networks = r.networks.map((n) => state.network(n)).filter((n): n is NetworkRecord =>
      n !== null
    );
    const uplinkNet = r.uplink === null ? null : state.network(r.uplink);
    const uplink = uplinkNet && r.uplinkIp
      ? {
        network: uplinkNet,
        ip: r.uplinkIp,
        chassis: gatewayOrder(r.name, state.hostsMapping(uplinkNet.physnet ?? "")),
      }
      : null;
    const floatingIps = uplink
      ? fips.filter((f) => f.network === uplink.network.name).flatMap((f) => {
        for (const n of networks) {
          const port = state.networkPorts(n.name).find((p) => p.vm === f.vm && p.nic === f.nic);
          if (port?.ip) return [{ external: f.ip, logical: port.ip }];
        }
        return [];
      })
      : [];
    return { name: r.name, snat: r.snat, networks, uplink, floatingIps };
  });
}

/** One router port as novactl wants it, with the switch port that joins it to its network. */
export interface RouterPortRow {
  name: string;
  mac: string;
  /** `IP/PREFIX`. */
  address: string;
  /** The switch (network) it sits on, and the switch port joining them. */
  network: string;
  switchPort: string;
  /** Gateway hosts, highest priority first; empty for a port on an attached network. */
  chassis: string[];
}

export interface NatRow {
  type: "snat" | "dnat_and_snat";
  external: string;
  logical: string;
}

export interface RouteRow {
  prefix: string;
  nexthop: string;
}

/** One router's rows as novactl wants them. */
export interface RouterRows {
  name: string;
  router: string;
  ports: RouterPortRow[];
  nats: NatRow[];
  routes: RouteRow[];
}

export const logicalRouterName = (router: string) => `nvr-${router}`;
export const routerPortName = (router: string, network: string | null) =>
  network === null ? `nvr-${router}.uplink` : `nvr-${router}_${network}`;
export const routerSwitchPortName = (router: string, network: string | null) =>
  network === null ? `nvrp-${router}.uplink` : `nvrp-${router}_${network}`;

/** A stable, locally administered MAC for a router port (`02:6e:72:...`, "nr"). */
export function routerPortMac(port: string): string {
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(port)) h = Math.imul(h ^ ch, 0x01000193) >>> 0;
  const b = [(h >>> 16) & 255, (h >>> 8) & 255, h & 255];
  return ["02", "6e", "72", ...b.map((x) => x.toString(16).padStart(2, "0"))].join(":");
}

/** What the northbound database must hold for `routers`. */
export function desiredRouters(routers: RouterInput[]): RouterRows[] {
  return routers.map((r) => {
    const port = (net: NetworkRecord, ip: string, uplink: boolean): RouterPortRow => {
      const name = routerPortName(r.name, uplink ? null : net.name);
      return {
        name,
        mac: routerPortMac(name),
        address: `${ip}/${parseCidr(net.subnet).prefix}`,
        network: net.name,
        switchPort: routerSwitchPortName(r.name, uplink ? null : net.name),
        chassis: uplink ? r.uplink!.chassis : [],
      };
    };
    const ports = r.networks.filter((n) => n.gateway !== null).map((n) =>
      port(n, n.gateway!, false)
    );
    const nats: NatRow[] = [];
    const routes: RouteRow[] = [];
    if (r.uplink) {
      ports.push(port(r.uplink.network, r.uplink.ip, true));
      if (r.uplink.network.gateway) {
        routes.push({ prefix: "0.0.0.0/0", nexthop: r.uplink.network.gateway });
      }
      if (r.snat) {
        for (const n of r.networks) {
          nats.push({ type: "snat", external: r.uplink.ip, logical: n.subnet });
        }
      }
      for (const f of r.floatingIps) {
        nats.push({ type: "dnat_and_snat", external: f.external, logical: f.logical });
      }
    }
    return { name: logicalRouterName(r.name), router: r.name, ports, nats, routes };
  });
}

// ---- what the database holds -------------------------------------------------------------

interface ActualRouterPort {
  uuid: string;
  mac: string;
  address: string;
  /** Gateway_Chassis rows: chassis → [uuid, priority]. */
  chassis: Map<string, { uuid: string; priority: number }>;
}

interface ActualSwitchPort {
  uuid: string;
  switchName: string;
  type: string;
  addresses: string;
  options: Record<string, string>;
}

export interface ActualRouter {
  uuid: string;
  router: string;
  ports: Map<string, ActualRouterPort>;
  nats: (NatRow & { uuid: string })[];
  routes: (RouteRow & { uuid: string })[];
}

export interface ActualRouters {
  routers: Map<string, ActualRouter>;
  /** novactl's router-type switch ports, by name. */
  switchPorts: Map<string, ActualSwitchPort>;
}

/** novactl's routers and their rows in the northbound database (one `ovn-nbctl` run). */
export async function readRouters(nbctl: NbCtl): Promise<ActualRouters> {
  const tables: [string, string[]][] = [
    ["Logical_Router", ["_uuid", "name", "ports", "nat", "static_routes", "external_ids"]],
    ["Logical_Router_Port", ["_uuid", "name", "mac", "networks", "gateway_chassis"]],
    ["Gateway_Chassis", ["_uuid", "chassis_name", "priority"]],
    ["NAT", ["_uuid", "type", "external_ip", "logical_ip"]],
    ["Logical_Router_Static_Route", ["_uuid", "ip_prefix", "nexthop"]],
    ["Logical_Switch", ["name", "ports"]],
    ["Logical_Switch_Port", ["_uuid", "name", "type", "addresses", "options", "external_ids"]],
  ];
  const out = await nbctl([
    "--format=json",
    ...tables.flatMap(([table, columns]) => [
      "--",
      `--columns=${columns.join(",")}`,
      "list",
      table,
    ]),
  ]);
  const [routers, lrps, gcs, nats, routes, switches, lsps] = out.trim().split("\n").map(
    (line) => {
      const doc = JSON.parse(line) as { headings: string[]; data: unknown[][] };
      return doc.data.map((row) =>
        Object.fromEntries(doc.headings.map((h, i) => [h, decode(row[i])]))
      ) as Record<string, unknown>[];
    },
  );
  const byUuid = (rows: Record<string, unknown>[]) =>
    new Map(rows.map((r) => [String(r._uuid), r]));
  const lrpBy = byUuid(lrps);
  const gcBy = byUuid(gcs);
  const natBy = byUuid(nats);
  const routeBy = byUuid(routes);
  const actual: ActualRouters = { routers: new Map(), switchPorts: new Map() };
  for (const r of routers) {
    const owner = (r.external_ids as Record<string, string>)[ROUTER_OWNER_KEY];
    if (!owner) continue;
    const ports = new Map<string, ActualRouterPort>();
    for (const u of asList(r.ports)) {
      const p = lrpBy.get(u);
      if (!p) continue;
      ports.set(String(p.name), {
        uuid: u,
        mac: String(p.mac),
        address: asList(p.networks).join(" "),
        chassis: new Map(
          asList(p.gateway_chassis).flatMap((g) => {
            const row = gcBy.get(g);
            return row
              ? [[String(row.chassis_name), { uuid: g, priority: Number(row.priority) }]]
              : [];
          }),
        ),
      });
    }
    actual.routers.set(String(r.name), {
      uuid: String(r._uuid),
      router: owner,
      ports,
      nats: asList(r.nat).flatMap((u) => {
        const n = natBy.get(u);
        return n
          ? [{
            uuid: u,
            type: n.type as NatRow["type"],
            external: String(n.external_ip),
            logical: String(n.logical_ip),
          }]
          : [];
      }),
      routes: asList(r.static_routes).flatMap((u) => {
        const x = routeBy.get(u);
        return x ? [{ uuid: u, prefix: String(x.ip_prefix), nexthop: String(x.nexthop) }] : [];
      }),
    });
  }
  const switchOf = new Map<string, string>();
  for (const sw of switches) for (const u of asList(sw.ports)) switchOf.set(u, String(sw.name));
  for (const p of lsps) {
    if (!(ROUTER_OWNER_KEY in (p.external_ids as Record<string, string>))) continue;
    actual.switchPorts.set(String(p.name), {
      uuid: String(p._uuid),
      switchName: switchOf.get(String(p._uuid)) ?? "",
      type: String(p.type),
      addresses: asList(p.addresses).join(" "),
      options: p.options as Record<string, string>,
    });
  }
  return actual;
}

function asList(v: unknown): string[] {
  return Array.isArray(v) ? v.map(String) : v === null || v === undefined ? [] : [String(v)];
}

/** An OVSDB JSON value (RFC 7047), as ./northbound.ts decodes it. */
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

/**
 * Makes novactl's routers in the northbound database equal `desired` in one
 * transaction; returns what changed. Run after the switches' pass: a router's
 * switch ports go on switches that pass made. A router port whose MAC or
 * address changed is replaced; gateway chassis, NAT rows and routes are
 * changed one by one, so an unchanged floating IP's flows stay in place.
 */
export async function applyRouters(
  nbctl: NbCtl,
  desired: RouterRows[],
  known?: ActualRouters,
): Promise<NorthboundChanges> {
  const actual = known ?? await readRouters(nbctl);
  const cmds: string[][] = [];
  const changes: NorthboundChanges = { created: [], updated: [], deleted: [] };
  const wanted = new Set(desired.map((r) => r.name));
  const wantedSwitchPorts = new Map(
    desired.flatMap((r) => r.ports.map((p) => [p.switchPort, { router: r, port: p }] as const)),
  );

  for (const [name, r] of actual.routers) {
    if (!wanted.has(name)) {
      // Its ports, NAT rows and routes are only referenced from it: OVSDB deletes them too.
      cmds.push(["lr-del", r.uuid]);
      changes.deleted.push(name);
    }
  }
  for (const [name, p] of actual.switchPorts) {
    const want = wantedSwitchPorts.get(name);
    // Gone, or on another switch than its network's now: made again below.
    if (!want || p.switchName !== switchName(want.port.network)) {
      cmds.push(["lsp-del", p.uuid]);
      if (!want) changes.deleted.push(name);
    }
  }

  let n = 0;
  for (const r of desired) {
    const have = actual.routers.get(r.name);
    if (!have) {
      cmds.push(["lr-add", r.name], [
        "set",
        "Logical_Router",
        r.name,
        `external_ids:${ROUTER_OWNER_KEY}=${r.router}`,
      ]);
      changes.created.push(r.name);
    }
    const ref = have?.uuid ?? r.name;
    const wantedPorts = new Set(r.ports.map((p) => p.name));
    for (const [name, p] of have?.ports ?? []) {
      if (!wantedPorts.has(name)) {
        cmds.push(["lrp-del", p.uuid]);
        changes.deleted.push(name);
      }
    }
    for (const p of r.ports) {
      portCommands(r, p, have?.ports.get(p.name), cmds, changes);
      switchPortCommands(p, actual.switchPorts.get(p.switchPort), r.router, cmds, changes);
    }
    const natKey = (x: NatRow) => `${x.type}|${x.external}|${x.logical}`;
    const wantNats = new Set(r.nats.map(natKey));
    const haveNats = new Set<string>();
    for (const x of have?.nats ?? []) {
      if (!wantNats.has(natKey(x)) || haveNats.has(natKey(x))) {
        cmds.push(["remove", "Logical_Router", ref, "nat", x.uuid]);
        changes.deleted.push(`nat:${r.name}:${natKey(x)}`);
      }
      haveNats.add(natKey(x));
    }
    for (const x of r.nats) {
      if (haveNats.has(natKey(x))) continue;
      const id = `@nat${n++}`;
      cmds.push([
        `--id=${id}`,
        "create",
        "NAT",
        `type=${x.type}`,
        `external_ip=${quote(x.external)}`,
        `logical_ip=${quote(x.logical)}`,
        `external_ids:${ROUTER_OWNER_KEY}=${r.router}`,
      ], ["add", "Logical_Router", ref, "nat", id]);
      changes.created.push(`nat:${r.name}:${natKey(x)}`);
    }
    const routeKey = (x: RouteRow) => `${x.prefix}|${x.nexthop}`;
    const wantRoutes = new Set(r.routes.map(routeKey));
    const haveRoutes = new Set<string>();
    for (const x of have?.routes ?? []) {
      if (!wantRoutes.has(routeKey(x)) || haveRoutes.has(routeKey(x))) {
        cmds.push(["remove", "Logical_Router", ref, "static_routes", x.uuid]);
        changes.deleted.push(`route:${r.name}:${routeKey(x)}`);
      }
      haveRoutes.add(routeKey(x));
    }
    for (const x of r.routes) {
      if (haveRoutes.has(routeKey(x))) continue;
      const id = `@route${n++}`;
      cmds.push([
        `--id=${id}`,
        "create",
        "Logical_Router_Static_Route",
        `ip_prefix=${quote(x.prefix)}`,
        `nexthop=${quote(x.nexthop)}`,
      ], ["add", "Logical_Router", ref, "static_routes", id]);
      changes.created.push(`route:${r.name}:${routeKey(x)}`);
    }
  }
  if (cmds.length) await nbctl(cmds.flatMap((c) => ["--", ...c]));
  return changes;
}

function portCommands(
  r: RouterRows,
  p: RouterPortRow,
  have: ActualRouterPort | undefined,
  cmds: string[][],
  changes: NorthboundChanges,
): void {
  const fresh = !have || have.mac !== p.mac || have.address !== p.address;
  if (fresh) {
    if (have) cmds.push(["lrp-del", have.uuid]);
    cmds.push(["lrp-add", r.name, p.name, p.mac, p.address]);
    (have ? changes.updated : changes.created).push(p.name);
  }
  // Priorities: the first host highest. A replaced port starts with no gateway chassis.
  const current = fresh ? new Map() : have!.chassis;
  const wanted = new Map(p.chassis.map((c, i) => [c, p.chassis.length - i]));
  for (const c of current.keys()) {
    if (!wanted.has(c)) {
      cmds.push(["lrp-del-gateway-chassis", p.name, c]);
      changes.deleted.push(`gateway:${p.name}:${c}`);
    }
  }
  for (const [c, priority] of wanted) {
    if (current.get(c)?.priority === priority) continue;
    cmds.push(["lrp-set-gateway-chassis", p.name, c, String(priority)]);
    changes.updated.push(`gateway:${p.name}:${c}=${priority}`);
  }
}

function switchPortCommands(
  p: RouterPortRow,
  have: ActualSwitchPort | undefined,
  router: string,
  cmds: string[][],
  changes: NorthboundChanges,
): void {
  // The gateway side announces the router's and floating IPs' addresses from its active host.
  const options: Record<string, string> = {
    "router-port": p.name,
    ...(p.chassis.length ? { "nat-addresses": "router" } : {}),
  };
  const columns = [
    `type=router`,
    `addresses=router`,
    `options={${Object.entries(options).map(([k, v]) => `${quote(k)}=${quote(v)}`).join(",")}}`,
    `external_ids:${ROUTER_OWNER_KEY}=${router}`,
  ];
  const sw = switchName(p.network);
  if (!have || have.switchName !== sw) {
    cmds.push(["lsp-add", sw, p.switchPort], [
      "set",
      "Logical_Switch_Port",
      p.switchPort,
      ...columns,
    ]);
    changes.created.push(p.switchPort);
    return;
  }
  const same = have.type === "router" && have.addresses === "router" &&
    sameMap(have.options, options);
  if (!same) {
    cmds.push(["set", "Logical_Switch_Port", have.uuid, ...columns]);
    changes.updated.push(p.switchPort);
  }
}

function sameMap(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}

function quote(v: string): string {
  return JSON.stringify(v);
}
