/**
 * `novactl router ...` and `novactl fip ...`: routers with SNAT to an uplink,
 * and floating IPs; thin clients of /api/v1/routers and /api/v1/floating-ips.
 */
import { Command } from "commander";
import { NovaError } from "../core/errors/mod.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";

const routerPath = (name: string, rest = "") =>
  `/api/v1/routers/${encodeURIComponent(name)}${rest}`;
const fipPath = (ip: string, rest = "") => `/api/v1/floating-ips/${encodeURIComponent(ip)}${rest}`;

interface RouterView {
  name: string;
  uplink: string | null;
  uplinkIp: string | null;
  snat: boolean;
  networks: string[];
  gatewayChassis: { node: string; priority: number }[];
}

/** A router as one table row. */
function routerRow(r: RouterView): Record<string, unknown> {
  return {
    name: r.name,
    uplink: r.uplink ?? "",
    uplinkIp: r.uplinkIp ?? "",
    snat: r.snat,
    networks: r.networks.join(","),
    gateways: r.gatewayChassis.map((g) => g.node).join(","),
  };
}

/** `VM` or `VM:NIC` (NIC an index, 0 by default). */
export function parseVmNic(text: string): { vm: string; nic: number } {
  const m = /^([^:]+)(?::(\d{1,2}))?$/.exec(text);
  if (!m) throw new NovaError("usage", `"${text}" is not VM or VM:NIC`);
  return { vm: m[1], nic: Number(m[2] ?? 0) };
}

export function routerCommand(): Command {
  const router = new Command("router").description(
    "routers: connect networks and SNAT them to an uplink (flat or vlan network)",
  );
  withClientOptions(
    router.command("create").argument("<name>").description("create a router")
      .option("--uplink <network>", "flat or vlan network its gateway port sits on")
      .option("--uplink-ip <ip>", "its address on the uplink (default: IPAM picks one)")
      .option("--no-snat", "do not SNAT attached networks to the uplink address"),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & { uplink?: string; uplinkIp?: string; snat: boolean },
    ) => {
      const r = await clientOf(opts).request<RouterView>("POST", "/api/v1/routers", {
        name,
        uplink: opts.uplink ?? null,
        uplinkIp: opts.uplinkIp ?? null,
        snat: opts.snat,
      });
      render(
        opts.output,
        r,
        () =>
          console.log(
            `router ${name} created${r.uplinkIp ? ` (uplink address ${r.uplinkIp})` : ""}`,
          ),
      );
    },
  );
  withClientOptions(withListLimit(router.command("list").description("list routers")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list<"routers", RouterView>(
        "/api/v1/routers",
        "routers",
        opts.limit,
      );
      render(
        opts.output,
        r,
        () =>
          printTable(r.routers.map(routerRow), [
            "name",
            "uplink",
            "uplinkIp",
            "snat",
            "networks",
            "gateways",
          ]),
      );
    });
  withClientOptions(router.command("show").argument("<name>").description("show a router"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<
        RouterView & { floatingIps: Record<string, unknown>[] }
      >(routerPath(name));
      render(opts.output, r, () => {
        printFields(routerRow(r));
        console.log("\ngateway hosts (highest priority first):");
        printTable(r.gatewayChassis, ["node", "priority"]);
        console.log("\nfloating IPs:");
        printTable(r.floatingIps, ["ip", "vm", "nic"]);
      });
    });
  withClientOptions(
    router.command("delete").argument("<name>").description("delete a router no network is on"),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", routerPath(name));
    render(opts.output, r, () => console.log(`router ${name} deleted`));
  });
  withClientOptions(
    router.command("attach").argument("<router>").argument("<network>").description(
      "give the router a port on a network, at the network's gateway address",
    ),
  ).action(async (name: string, network: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("POST", routerPath(name, "/networks"), { network });
    render(opts.output, r, () => console.log(`network ${network} attached to router ${name}`));
  });
  withClientOptions(
    router.command("detach").argument("<router>").argument("<network>").description(
      "take the router's port off a network",
    ),
  ).action(async (name: string, network: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request(
      "DELETE",
      routerPath(name, `/networks/${encodeURIComponent(network)}`),
    );
    render(opts.output, r, () => console.log(`network ${network} detached from router ${name}`));
  });
  withClientOptions(
    router.command("set").argument("<router>").description("change a router's uplink")
      .option("--uplink <network>", "flat or vlan network for its gateway port")
      .option("--uplink-ip <ip>", "its address on the uplink (default: IPAM picks one)")
      .option("--no-uplink", "take the router off its uplink"),
  ).action(
    async (name: string, opts: GlobalOpts & { uplink?: string | false; uplinkIp?: string }) => {
      if (opts.uplink === undefined) {
        throw new NovaError("usage", "give --uplink NETWORK or --no-uplink");
      }
      const r = await clientOf(opts).request<RouterView>("PUT", routerPath(name, "/uplink"), {
        uplink: opts.uplink === false ? null : opts.uplink,
        ip: opts.uplinkIp ?? null,
      });
      render(
        opts.output,
        r,
        () =>
          console.log(
            r.uplink
              ? `router ${name}: uplink ${r.uplink} at ${r.uplinkIp}`
              : `router ${name}: no uplink`,
          ),
      );
    },
  );
  return router;
}

export function fipCommand(): Command {
  const fip = new Command("fip").description(
    "floating IPs: an uplink address forwarded to a VM's NIC (dnat_and_snat)",
  );
  withClientOptions(
    fip.command("create").description("allocate a floating IP on an uplink; prints it")
      .requiredOption("--network <uplink>", "flat or vlan network the address is on")
      .option("--ip <ip>", "the address (default: IPAM picks one)"),
  ).action(async (opts: GlobalOpts & { network: string; ip?: string }) => {
    const r = await clientOf(opts).request<{ ip: string }>("POST", "/api/v1/floating-ips", {
      network: opts.network,
      ip: opts.ip ?? null,
    });
    render(opts.output, r, () => console.log(r.ip));
  });
  withClientOptions(withListLimit(fip.command("list").description("list floating IPs")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/floating-ips", "floatingIps", opts.limit);
      render(opts.output, r, () => printTable(r.floatingIps, ["ip", "network", "vm", "nic"]));
    });
  withClientOptions(fip.command("show").argument("<ip>").description("show a floating IP"))
    .action(async (ip: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(fipPath(ip));
      render(opts.output, r, () => printFields(r));
    });
  withClientOptions(
    fip.command("attach").argument("<ip>").argument("<vm[:nic]>", "VM and NIC index (default 0)")
      .description("forward the floating IP to a VM's NIC (its network must be behind a router)"),
  ).action(async (ip: string, target: string, opts: GlobalOpts) => {
    const { vm, nic } = parseVmNic(target);
    const r = await clientOf(opts).request("POST", fipPath(ip, "/attach"), { vm, nic });
    render(opts.output, r, () => console.log(`${ip} → ${vm}:${nic}`));
  });
  withClientOptions(fip.command("detach").argument("<ip>").description("stop forwarding it"))
    .action(async (ip: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request("POST", fipPath(ip, "/detach"));
      render(opts.output, r, () => console.log(`${ip} detached`));
    });
  withClientOptions(fip.command("delete").argument("<ip>").description("release a floating IP"))
    .action(async (ip: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request("DELETE", fipPath(ip));
      render(opts.output, r, () => console.log(`${ip} deleted`));
    });
  return fip;
}
