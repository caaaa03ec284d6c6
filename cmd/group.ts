/** `novactl group ...`: placement groups, a thin client of /api/v1/groups. */
import { Command, Option } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printTable, render } from "./output.ts";

export function groupCommand(): Command {
  const group = new Command("group").description("placement groups (affinity / anti-affinity)");
  withClientOptions(
    group.command("create").argument("<name>").description("create a placement group")
      .addOption(
        new Option("--policy <policy>", "what members want").choices(["affinity", "anti-affinity"])
          .makeOptionMandatory(),
      )
      .option("--strict", "never violate (a VM that cannot comply is not placed)"),
  ).action(async (name: string, opts: GlobalOpts & { policy: string; strict?: boolean }) => {
    const r = await clientOf(opts).request("POST", "/api/v1/groups", {
      name,
      policy: opts.policy,
      strict: !!opts.strict,
    });
    render(opts.output, r, () => console.log(`group ${name} created`));
  });
  withClientOptions(withListLimit(group.command("list").description("list placement groups")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list("/api/v1/groups", "groups", opts.limit);
      render(opts.output, r, () => printTable(r.groups, ["name", "policy", "strict", "members"]));
    });
  withClientOptions(group.command("delete").argument("<name>").description("delete an empty group"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).request(
        "DELETE",
        `/api/v1/groups/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => console.log(`group ${name} deleted`));
    });
  return group;
}
