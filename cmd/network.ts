/** `novactl network ...`: virtual networks, a thin client of /api/v1/networks. */
import { Command, Option } from "commander";
import { nonNegativeInt } from "./parse.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printTable, render } from "./output.ts";

interface CreateOpts extends GlobalOpts {
  type: "overlay" | "vlan" | "flat";
  subnet: string;
  gateway?: string | false;
  vlan?: number;
  physnet?: string;
  dhcp: boolean;
  dns?: string;
  mtu?: number;
  nat?: boolean;
  reserve: string[];
}

const networkPath = (name: string) => `/api/v1/networks/${encodeURIComponent(name)}`;

export function networkCommand(): Command {
  const network = new Command("network").description("virtual networks (overlay, vlan, flat)");
  withClientOptions(
    network.command("create").argument("<name>").description("create a network")
      .addOption(
        new Option("--type <type>", "overlay (geneve), vlan or flat (a provider network)")
          .choices(["overlay", "vlan", "flat"]).default("overlay"),
      )
      .requiredOption("--subnet <cidr>", "IPv4 subnet, e.g. 10.10.0.0/24")
      .option("--gateway <ip>", "router address handed out by DHCP (default: first host)")
      .option("--no-gateway", "no router address")
      .option("--vlan <id>", "802.1Q VLAN id (1-4094), for --type vlan", nonNegativeInt)
      .option("--physnet <name>", "provider network hosts map to a bridge (default physnet1)")
      .option("--no-dhcp", "no DHCP: guests set their (IPAM-assigned) address themselves")
      .option("--dns <ip,...>", "DNS servers handed out by DHCP")
      .option("--mtu <bytes>", "MTU (default 1442 overlay, 1500 otherwise)", nonNegativeInt)
      .option("--nat", "SNAT to the uplink through a router")
      .option(
        "--reserve <from-to>",
        "address range IPAM never hands out (repeatable)",
        (v: string, prev: string[]) => [...prev, v],
        [],
      ),
  ).action(async (name: string, opts: CreateOpts) => {
    const r = await clientOf(opts).request("POST", "/api/v1/networks", {
      name,
      type: opts.type,
      subnet: opts.subnet,
      gateway: opts.gateway === false ? null : opts.gateway,
      vlan: opts.vlan,
      physnet: opts.physnet,
      dhcp: opts.dhcp,
      dns: opts.dns ? opts.dns.split(",").map((d) => d.trim()).filter(Boolean) : undefined,
      mtu: opts.mtu,
      nat: !!opts.nat,
      reserved: opts.reserve.length ? opts.reserve : undefined,
    });
    render(opts.output, r, () => console.log(`network ${name} created`));
  });
  withClientOptions(withListLimit(network.command("list").description("list networks")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/networks", "networks", opts.limit);
      render(
        opts.output,
        r,
        () => printTable(r.networks, ["name", "type", "subnet", "gateway", "vlan", "mtu", "ports"]),
      );
    });
  withClientOptions(network.command("show").argument("<name>").description("show a network"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown> & { ports: unknown[] }>(
        networkPath(name),
      );
      render(opts.output, r, () => {
        const { ports, ...rest } = r;
        printTable([rest], ["name", "type", "subnet", "gateway", "vlan", "physnet", "dhcp", "mtu"]);
        printTable(ports as Record<string, unknown>[], ["vm", "nic", "ip", "mac"]);
      });
    });
  withClientOptions(
    network.command("delete").argument("<name>").description("delete a network no NIC is on"),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", networkPath(name));
    render(opts.output, r, () => console.log(`network ${name} deleted`));
  });
  return network;
}
