/**
 * `novactl pool ...`: storage pools, a thin client of /api/v1/pools (api/routes/pools.ts).
 *
 * - `pool create NAME --driver dir|shared-dir|btrfs --source PATH [--node N]`
 *   `[--size 10G [--mount DIR]]` (with `--size`: a btrfs image made at PATH, mounted on DIR)
 * - `pool list`, `pool show NAME` (each host's capacity and usage), `pool delete NAME`
 */
import { Command, Option } from "commander";
import { sizeBytes } from "./parse.ts";
import { POOL_DRIVERS } from "../core/fsm/command_schemas.ts";
import {
  clientOf,
  type GlobalOpts,
  type ListOpts,
  withClientOptions,
  withListLimit,
} from "./common.ts";
import { printFields, printTable, render } from "./output.ts";

/** Sizes go through the one size parser (parse.ts); the name stays for callers. */
export { sizeBytes as parseBytes };

/** Bytes as `12.3G`. */
export function formatBytes(n: number): string {
  for (const [unit, shift] of [["T", 40], ["G", 30], ["M", 20], ["K", 10]] as const) {
    if (n >= 2 ** shift) return `${(n / 2 ** shift).toFixed(1)}${unit}`;
  }
  return `${n}`;
}

interface HostUsage {
  totalBytes: number;
  freeBytes: number;
  allocatedBytes: number;
  volumes: number;
  error?: string;
}

interface PoolView {
  name: string;
  driver: string;
  source: string | null;
  node: string | null;
  builtin: boolean;
  loop: { image: string; sizeBytes: number } | null;
  hosts: Record<string, HostUsage>;
  vmDisks: number;
  volumes: number;
}

function poolRow(p: PoolView): Record<string, unknown> {
  const hosts = Object.values(p.hosts);
  const free = hosts.filter((h) => !h.error).map((h) => h.freeBytes);
  return {
    name: p.name,
    driver: p.driver,
    source: p.source ?? "DATA_DIR/pool",
    node: p.node ?? "(every host)",
    free: free.length ? formatBytes(Math.min(...free)) : "",
    vmDisks: p.vmDisks,
    volumes: p.volumes,
  };
}

const poolPath = (name: string) => `/api/v1/pools/${encodeURIComponent(name)}`;

export function poolCommand(): Command {
  const pool = new Command("pool").description("storage pools: where disks and volumes live");
  withClientOptions(
    pool.command("create").argument("<name>").description("create a storage pool")
      .addOption(
        new Option("--driver <driver>", "the storage backend").choices(POOL_DRIVERS)
          .makeOptionMandatory(),
      )
      .requiredOption(
        "--source <path>",
        "its directory (btrfs: a btrfs mount; with --size: the image)",
      )
      .option("--node <node>", "the one host that has it (default: every host, same path)")
      .option(
        "--size <size>",
        "btrfs: make a loop-backed image of this size at --source",
        sizeBytes,
      )
      .option("--mount <dir>", "with --size: where to mount it (default: SOURCE.mnt)"),
  ).action(
    async (
      name: string,
      opts: GlobalOpts & {
        driver: string;
        source: string;
        node?: string;
        size?: number;
        mount?: string;
      },
    ) => {
      const r = await clientOf(opts).request<PoolView>("POST", "/api/v1/pools", {
        name,
        driver: opts.driver,
        source: opts.source,
        node: opts.node ?? null,
        ...(opts.size !== undefined ? { sizeBytes: opts.size } : {}),
        ...(opts.mount !== undefined ? { mount: opts.mount } : {}),
      });
      render(
        opts.output,
        r,
        () => console.log(`pool ${name} created (${r.driver} at ${r.source})`),
      );
    },
  );
  withClientOptions(withListLimit(pool.command("list").description("list pools")))
    .action(async (opts: ListOpts) => {
      const r = await clientOf(opts).list<"pools", PoolView>("/api/v1/pools", "pools", opts.limit);
      render(
        opts.output,
        r,
        () =>
          printTable(r.pools.map(poolRow), [
            "name",
            "driver",
            "source",
            "node",
            "free",
            "vmDisks",
            "volumes",
          ]),
      );
    });
  withClientOptions(pool.command("show").argument("<name>").description("show a pool per host"))
    .action(async (name: string, opts: GlobalOpts) => {
      const p = await clientOf(opts).get<PoolView>(poolPath(name));
      render(opts.output, p, () => {
        printFields(poolRow(p));
        console.log("\nhosts:");
        printTable(
          Object.entries(p.hosts).map(([host, u]) => ({
            host,
            total: formatBytes(u.totalBytes),
            free: formatBytes(u.freeBytes),
            allocated: formatBytes(u.allocatedBytes),
            volumes: u.volumes,
            error: u.error ?? "",
          })),
          ["host", "total", "free", "allocated", "volumes", "error"],
        );
      });
    });
  withClientOptions(
    pool.command("delete").argument("<name>").description("delete a pool nothing is in"),
  ).action(async (name: string, opts: GlobalOpts) => {
    const r = await clientOf(opts).request("DELETE", poolPath(name));
    render(opts.output, r, () => console.log(`pool ${name} deleted`));
  });
  return pool;
}
