/**
 * `novactl vm disk attach|detach|list`: disk hot-plug, a thin client of
 * /api/v1/vms/NAME/disks (api/routes/volumes.ts).
 *
 * - `vm disk attach VM VOLUME`: hot-plugged when the VM runs, else at its next start
 * - `vm disk detach VM VOLUME` (a volume's name or its disk id); never the root disk of a
 *   running VM
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
import { formatBytes } from "./pool.ts";

interface DiskView {
  id: string;
  pool?: string;
  volume: string;
  sizeBytes: number;
  source: { kind: string };
  port?: number;
}

const disksPath = (vm: string, rest = "") => `/api/v1/vms/${encodeURIComponent(vm)}/disks${rest}`;

export function diskCommand(): Command {
  const disk = new Command("disk").description(
    "attach or detach volumes (hot-plugged if the VM runs)",
  );
  withClientOptions(
    disk.command("attach").argument("<vm>").argument("<volume>").description(
      "attach a volume to a VM",
    ),
  ).action(async (vm: string, volume: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request<DiskView>("POST", disksPath(vm), { volume });
    render(opts.output, r, () => console.log(`${vm}: volume ${volume} attached as ${r.id}`));
  });
  withClientOptions(
    disk.command("detach").argument("<vm>").argument("<volume>", "the volume or its disk id")
      .description("detach a volume from a VM (unplugged from the guest if running)"),
  ).action(async (vm: string, which: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request<{ detached: DiskView }>(
      "DELETE",
      disksPath(vm, `/${encodeURIComponent(which)}`),
    );
    render(opts.output, r, () => console.log(`${vm}: volume ${r.detached.volume} detached`));
  });
  withClientOptions(
    withListLimit(disk.command("list").argument("<vm>").description("list a VM's disks")),
  )
    .action(async (vm: string, opts: ListOpts) => {
      const r = await clientOf(opts).list<"disks", DiskView>(disksPath(vm), "disks", opts.limit);
      render(
        opts.output,
        r,
        () =>
          printTable(
            r.disks.map((d) => ({
              id: d.id,
              pool: d.pool ?? "dir",
              volume: d.volume,
              size: formatBytes(d.sizeBytes),
              kind: d.source.kind === "attached" ? "volume" : "own",
            })),
            ["id", "pool", "volume", "size", "kind"],
          ),
      );
    });
  return disk;
}
