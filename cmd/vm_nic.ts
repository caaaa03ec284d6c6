/**
 * `novactl vm nic add|remove|list`: NIC hot-plug, a thin client of
 * /api/v1/vms/NAME/nics (api/routes/vm_nics.ts).
 *
 * - `vm nic add VM NETWORK[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP]]` (as `vm create --nic`)
 * - `vm nic remove VM NIC`: NIC is the NIC's index (as `vm nic list` shows it) or its MAC
 * - both with `--wait [--timeout 2m]`: return once the running guest has (or let go of) the
 *   NIC (./hotplug_wait.ts)
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
import { plugCall, type PlugWaitOpts, withPlugWait } from "./hotplug_wait.ts";

type NicView = {
  index: number;
  network: string;
  ip: string | null;
  mac: string;
  securityGroups?: string[];
  guestIps?: string[] | null;
  ipStatus?: string;
  plugged?: boolean | null;
};

const nicsPath = (vm: string, rest = "") => `/api/v1/vms/${encodeURIComponent(vm)}/nics${rest}`;

export function nicCommand(): Command {
  const nic = new Command("nic").description("add or remove a VM's NICs (hot-plugged if running)");
  withPlugWait(
    nic.command("add").argument("<vm>").argument(
      "<nic>",
      "NETWORK[,ip=IP][,mac=MAC][,sg=GROUP[+GROUP]]",
      (v: string) => collectNic(v, [])[0],
    ).description("add a NIC on a network (its address and MAC from IPAM unless given)"),
    "the running guest has the NIC (or the VM does not run)",
  ).action(
    async (vm: string, spec: ReturnType<typeof collectNic>[0], opts: GlobalOpts & PlugWaitOpts) => {
      const r = await plugCall<NicView>(clientOf(opts), "POST", nicsPath(vm), spec, opts, {
        what: `${vm}: NIC on ${spec.network}`,
      });
      render(
        opts.output,
        r,
        () =>
          console.log(`${vm}: NIC ${r.index} on ${r.network}, ${r.mac}, ${r.ip ?? "no address"}`),
      );
    },
  );
  withPlugWait(
    nic.command("remove").argument("<vm>").argument("<nic>", "the NIC's index or MAC")
      .description("remove a NIC (unplugged from the guest if running)"),
    "the running guest let go of the NIC (or the VM does not run)",
  ).action(async (vm: string, which: string, opts: GlobalOpts & PlugWaitOpts) => {
    const r = await plugCall<{ removed: NicView }>(
      clientOf(opts),
      "DELETE",
      nicsPath(vm, `/${encodeURIComponent(which)}`),
      undefined,
      opts,
      { what: `${vm}: NIC ${which}` },
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
        () =>
          printTable(r.nics, ["index", "network", "ip", "mac", "guestIps", "ipStatus", "plugged"]),
      );
    });
  return nic;
}
