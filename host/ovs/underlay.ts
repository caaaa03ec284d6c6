/**
 * The underlay of a host's overlay networks: the interface whose IPv4 address
 * is the tunnel endpoint (the encap IP ovn-controller announces).
 *
 * On OVS's userspace (netdev) datapath, tunnels leave and arrive through an
 * OVS bridge: OVS routes the encapsulated packet itself, and only to a bridge
 * that holds the source address. So the node moves the address (and the
 * routes through the interface) from the interface onto the bridge
 * `br-phy`, with the interface as the bridge's port and the bridge keeping
 * the interface's MAC, so neighbours' ARP caches stay right. The interface's
 * own kernel stack is then cut off by an nftables netdev-ingress drop (OVS
 * still reads every packet through its raw socket, which sees them first);
 * otherwise two interfaces answer ARP for one address. Sockets bound to the
 * address (the node's API) keep working: the address stays on the host.
 *
 * What was moved is written down (`DATA_DIR/ovs/underlay.json`), so a node
 * that finds the address gone (its bridge was deleted) puts it back.
 *
 * A loopback tunnel address (one host in development) needs no underlay.
 *
 * @module
 */
import { join } from "node:path";
import { ValidationError } from "../../core/errors/mod.ts";
import { log } from "../../core/log/mod.ts";
import { writeFileDurably } from "../../core/store/mod.ts";
import { runTool } from "./daemon_dir.ts";
import type { OvsHost } from "./ovs_host.ts";

/** The OVS bridge that carries the tunnel address on the userspace datapath. */
export const UNDERLAY_BRIDGE = "br-phy";
const NFT_TABLE = "novactl_underlay";
/**
 * Frames the bridge's kernel side queues for `ovs-vswitchd` to read. The kernel's 1,000 fill
 * within a millisecond of a live migration's stream while the daemon is not scheduled, and
 * each frame dropped there is a TCP retransmission (see ./socket_buffers.ts for the other
 * direction).
 */
export const UNDERLAY_TX_QUEUE = 10_000;
const RECORD_FILE = "underlay.json";

/** An IPv4 address on an interface. */
export interface HostAddress {
  iface: string;
  address: string;
  prefix: number;
}

/** What the node moved onto the bridge (kept in the OVS directory). */
interface UnderlayRecord extends HostAddress {
  /** Routes through the interface other than its subnet's, as `ip route` prints them. */
  routes: string[];
}

function ip(args: string[]): Promise<string> {
  return runTool("ip", args);
}

/** Every IPv4 address of the host (this network namespace). */
export async function hostAddresses(): Promise<HostAddress[]> {
  const out = await ip(["-4", "-o", "addr", "show"]);
  return [...out.matchAll(/^\d+:\s+(\S+)\s+inet\s+([\d.]+)\/(\d+)/gm)].map((m) => ({
    iface: m[1].replace(/@.*$/, ""),
    address: m[2],
    prefix: Number(m[3]),
  }));
}

/**
 * The tunnel endpoint: the IPv4 address of `iface` (`--tunnel-interface`), or
 * `advertised` (the address peers reach the node at) when no interface is given.
 * An interface already moved onto the bridge is found through the record.
 */
export async function tunnelAddress(
  ovsDir: string,
  iface: string | undefined,
  advertised: string,
): Promise<string> {
  if (!iface) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(advertised)) {
      throw ValidationError.field(
        "tunnel-interface",
        `the advertised host "${advertised}" is not an IPv4 address: name the tunnel interface`,
      );
    }
    return advertised;
  }
  const found = (await hostAddresses()).find((a) => a.iface === iface);
  if (found) return found.address;
  const moved = await readRecord(ovsDir);
  if (moved?.iface === iface) return moved.address;
  throw ValidationError.field("tunnel-interface", `interface ${iface} has no IPv4 address`);
}

export function isLoopback(address: string): boolean {
  return address.startsWith("127.");
}

async function readRecord(ovsDir: string): Promise<UnderlayRecord | null> {
  try {
    return JSON.parse(await Deno.readTextFile(join(ovsDir, RECORD_FILE)));
  } catch {
    return null;
  }
}

/**
 * Makes `address` the address of the underlay bridge (moving it and its
 * interface's routes there the first time); idempotent, cheap when in place.
 */
export async function ensureUnderlay(ovs: OvsHost, address: string): Promise<void> {
  if (isLoopback(address) || ovs.datapath !== "netdev") return;
  const where = (await hostAddresses()).find((a) => a.address === address);
  if (where?.iface === UNDERLAY_BRIDGE) {
    await bridgeUp();
    return;
  }
  const record = where ? await moveRecord(where) : await readRecord(ovs.dir.root);
  if (!record || record.address !== address) {
    throw ValidationError.field("tunnel-interface", `no interface holds ${address}`);
  }
  await writeFileDurably(join(ovs.dir.root, RECORD_FILE), JSON.stringify(record) + "\n");
  await attachToBridge(ovs, record, !!where);
  log.info("tunnel address moved onto the underlay bridge", {
    iface: record.iface,
    address,
    bridge: UNDERLAY_BRIDGE,
  });
}

/** What moving `where` takes: its routes other than the subnet's own (the kernel adds those). */
async function moveRecord(where: HostAddress): Promise<UnderlayRecord> {
  const routes = (await ip(["-4", "-o", "route", "show", "dev", where.iface]))
    .split("\n").map((r) => r.trim()).filter((r) => r && !/\bproto kernel\b/.test(r));
  return { ...where, routes };
}

async function attachToBridge(
  ovs: OvsHost,
  r: UnderlayRecord,
  addressOnIface: boolean,
): Promise<void> {
  const mac = (await Deno.readTextFile(`/sys/class/net/${r.iface}/address`)).trim();
  await ovs.ensureBridge(UNDERLAY_BRIDGE);
  await ovs.vsctl([
    "set",
    "bridge",
    UNDERLAY_BRIDGE,
    `other_config:hwaddr="${mac}"`,
    "--",
    "--may-exist",
    "add-port",
    UNDERLAY_BRIDGE,
    r.iface,
  ]);
  await dropIngress(r.iface);
  const cidr = `${r.address}/${r.prefix}`;
  if (addressOnIface) await ip(["addr", "del", cidr, "dev", r.iface]);
  await ip(["addr", "replace", cidr, "dev", UNDERLAY_BRIDGE]);
  await bridgeUp();
  for (const route of r.routes) {
    await ip(["route", "replace", ...route.split(/\s+/), "dev", UNDERLAY_BRIDGE]).catch((err) =>
      log.warn("could not move a route onto the underlay bridge", { route, error: String(err) })
    );
  }
}

async function bridgeUp(): Promise<void> {
  await ip(["link", "set", UNDERLAY_BRIDGE, "txqueuelen", String(UNDERLAY_TX_QUEUE), "up"]);
}

/** The kernel stops seeing what arrives on `iface` (OVS's raw socket still does). */
async function dropIngress(iface: string): Promise<void> {
  const rules = [
    `table netdev ${NFT_TABLE} {}`,
    `delete table netdev ${NFT_TABLE}`,
    `table netdev ${NFT_TABLE} {`,
    `  chain ingress_drop {`,
    `    type filter hook ingress device "${iface}" priority 0; policy drop;`,
    `  }`,
    `}`,
  ].join("\n");
  const child = new Deno.Command("nft", {
    args: ["-f", "-"],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(rules + "\n"));
  await w.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(`nft (ingress drop on ${iface}): ${new TextDecoder().decode(out.stderr)}`);
  }
}
