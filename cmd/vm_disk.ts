/**
 * `novactl vm disk attach|detach|list`: disk hot-plug, a thin client of
 * /api/v1/vms/NAME/disks (api/routes/volumes.ts).
 *
 * - `vm disk attach VM VOLUME`: hot-plugged when the VM runs, else at its next start
 * - `vm disk detach VM VOLUME` (a volume's name or its disk id); never the root disk of a
 *   running VM
 * - both with `--wait [--timeout 2m]`: return once the running guest has (or let go of) the
 *   disk (./hotplug_wait.ts)
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
import { plugCall, type PlugWaitOpts, withPlugWait } from "./hotplug_wait.ts";

interface DiskView {
  id: string;
  pool?: string;
  volume: string;
  sizeBytes: number;
  source: { kind: string };
  port?: number;
  /** In the running QEMU; null: the VM does not run (or its host has not reported). */
  plugged?: boolean | null;
}

const disksPath = (vm: string, rest = "") => `/api/v1/vms/${encodeURIComponent(vm)}/disks${rest}`;

export function diskCommand(): Command {
  const disk = new Command("disk").description(
    "attach or detach volumes (hot-plugged if the VM runs)",
  );
  withPlugWait(
    disk.command("attach").argument("<vm>").argument("<volume>").description(
      "attach a volume to a VM",
    ),
    "the running guest has the disk (or the VM does not run)",
  ).action(async (vm: string, volume: string, opts: GlobalOpts & PlugWaitOpts) => {
    const r = await plugCall<DiskView>(clientOf(opts), "POST", disksPath(vm), { volume }, opts, {
      what: `${vm}: volume ${volume}`,
    });
    render(opts.output, r, () => console.log(`${vm}: volume ${volume} attached as ${r.id}`));
  });
  withPlugWait(
    disk.command("detach").argument("<vm>").argument("<volume>", "the volume or its disk id")
      .description("detach a volume from a VM (unplugged from the guest if running)"),
    "the running guest let go of the disk (or the VM does not run)",
  ).action(async (vm: string, which: string, opts: GlobalOpts & PlugWaitOpts) => {
    const r = await plugCall<{ detached: DiskView }>(
      clientOf(opts),
      "DELETE",
      disksPath(vm, `/${encodeURIComponent(which)}`),
      undefined,
      opts,
      { what: `${vm}: disk ${which}` },
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
              plugged: d.plugged ?? "-",
            })),
            ["id", "pool", "volume", "size", "kind", "plugged"],
          ),
      );
    });
  return disk;
}
