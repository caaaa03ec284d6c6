/**
 * `novactl volume ...`: volumes, a thin client of /api/v1/volumes (api/routes/volumes.ts).
 *
 * - `volume create NAME --pool P --size 10G [--from-image I] [--node N]`
 * - `volume list`, `volume show NAME`, `volume resize NAME --size 20G`, `volume delete NAME`
 */
import { Command } from "commander";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import { formatBytes, parseBytes } from "./pool.ts";

interface VolumeView {
  name: string;
  pool: string;
  node: string | null;
  sizeBytes: number;
  fromImage: string | null;
  attachedTo: string | null;
}

function volumeRow(v: VolumeView): Record<string, unknown> {
  return {
    name: v.name,
    pool: v.pool,
    node: v.node ?? "(shared)",
    size: formatBytes(v.sizeBytes),
    image: v.fromImage ?? "",
    attachedTo: v.attachedTo ?? "",
  };
}

const volumePath = (name: string, rest = "") =>
  `/api/v1/volumes/${encodeURIComponent(name)}${rest}`;

export function volumeCommand(): Command {
  const volume = new Command("volume").description("volumes: disks that attach to VMs");
  withClientOptions(
    volume.command("create").argument("<name>").description("create a volume in a pool")
      .requiredOption("--pool <pool>", "the pool it lives in")
      .requiredOption("--size <size>", "its size, e.g. 10G", parseBytes)
      .option("--from-image <image>", "start as a copy of a disk image")
      .option("--node <node>", "the host that holds it (a pool on every host needs it)"),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & { pool: string; size: number; fromImage?: string; node?: string },
    ) => {
      const r = await clientOf(opts).request<VolumeView>("POST", "/api/v1/volumes", {
        name,
        pool: opts.pool,
        sizeBytes: opts.size,
        fromImage: opts.fromImage ?? null,
        node: opts.node ?? null,
      });
      render(
        opts.output,
        r,
        () => console.log(`volume ${name} created in pool ${r.pool} (${formatBytes(r.sizeBytes)})`),
      );
    },
  );
  withClientOptions(withListLimit(volume.command("list").description("list volumes")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list<"volumes", VolumeView>(
        "/api/v1/volumes",
        "volumes",
        opts.limit,
      );
      render(
        opts.output,
        r,
        () =>
          printTable(r.volumes.map(volumeRow), [
            "name",
            "pool",
            "node",
            "size",
            "image",
            "attachedTo",
          ]),
      );
    });
  withClientOptions(volume.command("show").argument("<name>").description("show a volume"))
    .action(async (name: string, opts: GlobalOpts) => {
      const v = await clientOf(opts).get<VolumeView>(volumePath(name));
      render(opts.output, v, () => printFields(volumeRow(v)));
    });
  withClientOptions(
    volume.command("resize").argument("<name>").description(
      "grow a volume (a running VM's disk grows at once)",
    ).requiredOption("--size <size>", "its new size, e.g. 20G", parseBytes),
  ).action(async (name: string, opts: GlobalOpts & { size: number }) => {
    const v = await clientOf(opts).request<VolumeView>("POST", volumePath(name, "/resize"), {
      sizeBytes: opts.size,
    });
    render(opts.output, v, () => console.log(`volume ${name} is ${formatBytes(v.sizeBytes)}`));
  });
  withClientOptions(
    volume.command("delete").argument("<name>").description("delete a detached volume"),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", volumePath(name));
    render(opts.output, r, () => console.log(`volume ${name} deleted`));
  });
  return volume;
}
