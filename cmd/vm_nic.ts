/**
 * `novactl vm nic add|remove|list`: NIC hot-plug, a thin client of
 * /api/v1/vms/NAME/nics (api/routes/vm_nics.ts).
 *
 * - `vm nic add VM NETWORK[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP]]` (as `vm create --nic`)
 * - `vm nic remove VM NIC`: NIC is the NIC's index (as `vm nic list` shows it) or its MAC
 */
import { Command } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printTable, render } from "./output.ts";
import { collectNic } from "./vm.ts";

type NicView = {
  index: number;
  network: string;
  ip: string | null;
  mac: string;
  securityGroups?: string[];
  guestIps?: string[] | null;
  ipStatus?: string;
};

const nicsPath = (vm: string, rest = "") => `/api/v1/vms/${encodeURIComponent(vm)}/nics${rest}`;

export function nicCommand(): Command {
  const nic = new Command("nic").description("add or remove a VM's NICs (hot-plugged if running)");
  withClientOptions(
    nic.command("add").argument("<vm>").argument(
      "<nic>",
      "NETWORK[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP]]",
      (v: string) => collectNic(v, [])[0],
    ).description("add a NIC on a network (its address and MAC from IPAM unless given)"),
  ).action(async (vm: string, spec: ReturnType<typeof collectNic>[0], opts: GlobalOpts) => {
    const r = await clientOf(opts).request<NicView>("POST", nicsPath(vm), spec);
    render(
      opts.output,
      r,
      () => console.log(`${vm}: NIC ${r.index} on ${r.network}, ${r.mac}, ${r.ip ?? "no address"}`),
    );
  });
  withClientOptions(
    nic.command("remove").argument("<vm>").argument("<nic>", "the NIC's index or MAC")
      .description("remove a NIC (unplugged from the guest if running)"),
  ).action(async (vm: string, which: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request<{ removed: NicView }>(
      "DELETE",
      nicsPath(vm, `/${encodeURIComponent(which)}`),
    );
    render(
      opts.output,
      r,
      () => console.log(`${vm}: NIC ${r.removed.index} (${r.removed.mac}) removed`),
    );
  });
  withClientOptions(
    withListLimit(nic.command("list").argument("<vm>").description("list a VM's NICs")),
  )
    .action(async (vm: string, opts: ListOpts) => {
      const r = await clientOf(opts).list<"nics", NicView>(nicsPath(vm), "nics", opts.limit);
      render(
        opts.output,
        r,
        () => printTable(r.nics, ["index", "network", "ip", "mac", "guestIps", "ipStatus"]),
      );
    });
  return nic;
}
