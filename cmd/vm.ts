/** `novactl vm ...`: the VM lifecycle, as a thin client of /api/v1/vms. */
import { Command, InvalidArgumentError } from "commander";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { printFields, printTable, render } from "./output.ts";

/** Parses 256M, 1G, 512 (MiB) into MiB. */
export function parseMemoryMiB(text: string): number {
  const m = /^(\d+)([MG]i?B?)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`"${text}" is not a size like 256M or 2G`);
  const n = Number(m[1]);
  return m[2] && /^g/i.test(m[2]) ? n * 1024 : n;
}

function positiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

function collectLabel(value: string, previous: Record<string, string>): Record<string, string> {
  const m = /^([a-zA-Z0-9._/-]+)=(.*)$/.exec(value);
  if (!m) throw new InvalidArgumentError(`"${value}" is not key=value`);
  return { ...previous, [m[1]]: m[2] };
}

interface CreateOpts extends GlobalOpts {
  image: string;
  cpus: number;
  memory: number;
  node?: string;
  ha?: boolean;
  start: boolean;
  label: Record<string, string>;
}

function simpleAction(verb: "start" | "stop", path: string) {
  return async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request(
      "POST",
      `/api/v1/vms/${encodeURIComponent(name)}/${path}`,
    );
    render(opts.output, r, () => console.log(`${verb} requested for ${name}`));
  };
}

export function vmCommand(): Command {
  const vm = new Command("vm").description("virtual machines");

  withClientOptions(
    vm.command("create").argument("<name>").description("create (and by default start) a VM")
      .requiredOption("--image <image>", "image to boot")
      .option("--cpus <n>", "virtual CPUs", positiveInt, 1)
      .option("--memory <size>", "memory, e.g. 256M or 2G", parseMemoryMiB, 256)
      .option("--node <node>", "place on this node")
      .option("--ha", "restart on another node if its host fails")
      .option("--no-start", "create stopped")
      .option("--label <key=value>", "label (repeatable)", collectLabel, {}),
  ).action(async (name: string, opts: CreateOpts) => {
    const r = await clientOf(opts).request<Record<string, unknown>>("POST", "/api/v1/vms", {
      name,
      image: opts.image,
      cpus: opts.cpus,
      memoryMiB: opts.memory,
      node: opts.node,
      ha: !!opts.ha,
      start: opts.start,
      labels: opts.label,
    });
    render(opts.output, r, () => console.log(`VM ${name} created on ${r.node} (${r.state})`));
  });

  withClientOptions(vm.command("list").description("list VMs")).action(async (opts: GlobalOpts) => {
    const r = await clientOf(opts).get<{ vms: Record<string, unknown>[] }>("/api/v1/vms");
    render(
      opts.output,
      r,
      () => printTable(r.vms, ["name", "node", "state", "desired", "cpus", "memoryMiB", "image"]),
    );
  });

  withClientOptions(vm.command("show").argument("<name>").description("show one VM"))
    .action(async (name: string, opts: GlobalOpts) => {
      const r = await clientOf(opts).get<Record<string, unknown>>(
        `/api/v1/vms/${encodeURIComponent(name)}`,
      );
      render(opts.output, r, () => printFields(r));
    });

  withClientOptions(vm.command("start").argument("<name>").description("start a VM"))
    .action(simpleAction("start", "start"));
  withClientOptions(vm.command("stop").argument("<name>").description("stop a VM"))
    .action(simpleAction("stop", "stop"));

  withClientOptions(
    vm.command("delete").argument("<name>").description("delete a VM and its disks")
      .option("--force", "delete even while running"),
  ).action(async (name: string, opts: GlobalOpts & { force?: boolean }) => {
    const q = opts.force ? "?force=true" : "";
    const r = await clientOf(opts).request("DELETE", `/api/v1/vms/${encodeURIComponent(name)}${q}`);
    render(opts.output, r, () => console.log(`delete requested for ${name}`));
  });

  return vm;
}
