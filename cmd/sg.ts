/** `novactl sg ...`: security groups and their rules, a thin client of /api/v1/security-groups. */
import { Command, Option } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";

const sgPath = (name: string, rest = "") =>
  `/api/v1/security-groups/${encodeURIComponent(name)}${rest}`;

interface RuleView {
  id: string;
  direction: string;
  protocol: string;
  portMin: number | null;
  portMax: number | null;
  remoteCidr: string | null;
  remoteGroup: string | null;
}

interface RuleAddOpts extends GlobalOpts {
  dir: "ingress" | "egress";
  proto: "tcp" | "udp" | "icmp" | "any";
  port?: string;
  remote?: string;
  remoteSg?: string;
}

/** A rule as one table row: ports as `N` or `N-M`, the remote as a CIDR or `sg:NAME`. */
function ruleRow(r: RuleView): Record<string, unknown> {
  return {
    id: r.id,
    direction: r.direction,
    protocol: r.protocol,
    port: r.portMin === null
      ? ""
      : r.portMin === r.portMax
      ? r.portMin
      : `${r.portMin}-${r.portMax}`,
    remote: r.remoteGroup ? `sg:${r.remoteGroup}` : r.remoteCidr ?? "any",
  };
}

export function sgCommand(): Command {
  const sg = new Command("sg").description("security groups: stateful allow rules for NICs");
  withClientOptions(
    sg.command("create").argument("<name>").description("create a security group")
      .option("--description <text>", "what the group is for"),
  ).action(async (name: string, opts: GlobalOpts & { description?: string }) => {
    const r = await clientOf(opts).request("POST", "/api/v1/security-groups", {
      name,
      description: opts.description,
    });
    render(opts.output, r, () => console.log(`security group ${name} created`));
  });
  withClientOptions(withListLimit(sg.command("list").description("list security groups")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/security-groups", "securityGroups", opts.limit);
      render(
        opts.output,
        r,
        () => printTable(r.securityGroups, ["name", "rules", "ports", "description"]),
      );
    });
  withClientOptions(sg.command("show").argument("<name>").description("show a group's rules"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<
        Record<string, unknown> & { rules: RuleView[]; ports: Record<string, unknown>[] }
      >(sgPath(name));
      render(opts.output, r, () => {
        const { rules, ports, ...rest } = r;
        printFields({ name: rest.name, description: rest.description });
        console.log("\nrules:");
        printTable(rules.map(ruleRow), ["id", "direction", "protocol", "port", "remote"]);
        console.log("\nports:");
        printTable(ports, ["vm", "nic", "network", "ip"]);
      });
    });
  withClientOptions(
    sg.command("delete").argument("<name>").description(
      "delete a group no NIC is in and no other group's rule names",
    ),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", sgPath(name));
    render(opts.output, r, () => console.log(`security group ${name} deleted`));
  });

  const rule = sg.command("rule").description("a security group's rules");
  withClientOptions(
    rule.command("add").argument("<sg>").description(
      "add an allow rule; prints its id (ingress is denied and egress allowed until a rule says otherwise)",
    )
      .addOption(
        new Option("--dir <direction>", "ingress (to the NICs) or egress (from them)")
          .choices(["ingress", "egress"]).makeOptionMandatory(),
      )
      .addOption(
        new Option("--proto <protocol>", "tcp, udp, icmp or any").choices([
          "tcp",
          "udp",
          "icmp",
          "any",
        ]).makeOptionMandatory(),
      )
      .option("--port <N[-M]>", "destination port or range (tcp and udp only)")
      .addOption(
        new Option("--remote <cidr>", "the other end's addresses (default: anywhere)")
          .conflicts("remoteSg"),
      )
      .option("--remote-sg <sg>", "the other end is any NIC in this group"),
  ).action(async (name: string, opts: RuleAddOpts) => {
    const r = await clientOf(opts).request<RuleView>("POST", sgPath(name, "/rules"), {
      direction: opts.dir,
      protocol: opts.proto,
      port: opts.port,
      remote: opts.remote,
      remoteGroup: opts.remoteSg,
    });
    render(opts.output, r, () => console.log(r.id));
  });
  withClientOptions(
    rule.command("remove").argument("<sg>").argument("<rule-id>").description("remove a rule"),
  ).action(async (name: string, id: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request(
      "DELETE",
      sgPath(name, `/rules/${encodeURIComponent(id)}`),
    );
    render(opts.output, r, () => console.log(`rule ${id} removed from ${name}`));
  });
  return sg;
}
