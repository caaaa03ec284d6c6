/**
 * `novactl vm stats NAME [--since 1h] [--step 10s]` and `novactl top`: thin clients of
 * /api/v1/vms/NAME/stats and /api/v1/nodes/NAME/stats (api/routes/stats.ts).
 *
 * `top` shows VMs (or hosts with `--nodes`) sorted, refreshing every `--interval` seconds on a
 * terminal; with `--once`, `-o json` or when stdout is not a terminal it prints once.
 */
import { Command, Option } from "commander";
import { durationSeconds } from "./parse.ts";
import type { ApiClient } from "./client.ts";
import { clientOf, type GlobalOpts, withClientOptions } from "./common.ts";
import { printFields, printTable, render } from "./output.ts";
import type { NodeStatsView, VmStatsView } from "../api/routes/stats.ts";
import type { VmSample } from "../host/metrics/mod.ts";

/** 1536 → "1.5K"; bytes in powers of 1024. */
export function humanBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "-";
  const units = ["B", "K", "M", "G", "T"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)}${units[i]}`;
}

const pct = (n: number | null | undefined) => n === null || n === undefined ? "-" : n.toFixed(1);
const rate = (n: number | null | undefined) => n === null || n === undefined ? "-" : humanBytes(n);

/** A VM sample's columns as people read them. */
function vmColumns(s: Partial<Record<keyof VmSample, number | null>>) {
  return {
    "cpu%": pct(s.cpuPercent),
    mem: humanBytes(s.memoryBytes),
    "disk-r/s": rate(s.diskReadBytesPerSec),
    "disk-w/s": rate(s.diskWriteBytesPerSec),
    "net-rx/s": rate(s.netRxBytesPerSec),
    "net-tx/s": rate(s.netTxBytesPerSec),
  };
}

const VM_COLUMNS = ["cpu%", "mem", "disk-r/s", "disk-w/s", "net-rx/s", "net-tx/s"];

export function vmStatsCommand(): Command {
  return withClientOptions(
    new Command("stats").argument("<name>").description(
      "a VM's CPU, memory, disk and network use, now and over time (from its host)",
    )
      .option("--since <duration>", "how far back, e.g. 15m, 1h, 7d (at most 30d)", "1h")
      .option("--step <step>", "time between points, e.g. 10s, 1m, 5m (default: from --since)"),
  ).action(async (name: string, opts: GlobalOpts & { since: string; step?: string }) => {
    const q = new URLSearchParams({ since: opts.since });
    if (opts.step) q.set("step", opts.step);
    const r = await clientOf(opts).get<VmStatsView>(
      `/api/v1/vms/${encodeURIComponent(name)}/stats?${q}`,
    );
    render(opts.output, r, () => {
      const now = r.current;
      printFields({
        vm: r.vm,
        node: r.node,
        state: r.state,
        sampled: now?.t ?? "not yet (the host samples every 10 s)",
        ...(now ? { ...vmColumns(now), balloon: humanBytes(now.balloonBytes) } : {}),
      });
      if (r.points.length === 0) return;
      console.log(`\nhistory since ${r.since}, every ${r.step}:`);
      printTable(
        r.points.map((p) => ({ time: p.t, ...vmColumns(p) })),
        ["time", ...VM_COLUMNS],
      );
    });
  });
}

interface TopOpts extends GlobalOpts {
  nodes?: boolean;
  sort: string;
  once?: boolean;
  interval: number;
}

/** One row of `top`: a VM or a host, with what it is sorted by. */
type Row = Record<string, unknown> & { name: string; cpu: number; memory: number };

/** Every member's stats (a host that does not answer is left out, and named on stderr). */
async function allStats(client: ApiClient): Promise<NodeStatsView[]> {
  const { nodes } = await client.list<"nodes", { name: string }>("/api/v1/nodes", "nodes");
  const got = await Promise.allSettled(
    nodes.map((n) =>
      client.get<NodeStatsView>(`/api/v1/nodes/${encodeURIComponent(n.name)}/stats?since=1m`)
    ),
  );
  const out: NodeStatsView[] = [];
  got.forEach((g, i) => {
    if (g.status === "fulfilled") out.push(g.value);
    else console.error(`warning: no stats from ${nodes[i].name}: ${g.reason?.message ?? g.reason}`);
  });
  return out;
}

function vmRows(stats: NodeStatsView[]): Row[] {
  return stats.flatMap((n) =>
    n.vms.map((v) => ({
      name: v.name,
      node: n.node,
      cpu: v.cpuPercent,
      memory: v.memoryBytes,
      ...vmColumns(v),
    }))
  );
}

function hostRows(stats: NodeStatsView[]): Row[] {
  return stats.map((n) => {
    const c = n.current;
    return {
      name: n.node,
      cpu: c?.cpuPercent ?? 0,
      memory: c?.memoryUsedBytes ?? 0,
      "cpu%": pct(c?.cpuPercent),
      mem: c ? `${humanBytes(c.memoryUsedBytes)}/${humanBytes(c.memoryTotalBytes)}` : "-",
      disk: c ? `${humanBytes(c.diskUsedBytes)}/${humanBytes(c.diskTotalBytes)}` : "-",
      pools: humanBytes(c?.poolAllocatedBytes),
      load: c ? c.load1.toFixed(2) : "-",
      vms: c?.vms ?? n.vms.length,
    };
  });
}

/** Sorted by `key`: names ascending, the rest biggest first. */
export function sortRows(rows: Row[], key: string): Row[] {
  const by = key === "mem" ? "memory" : key;
  return [...rows].sort((a, b) =>
    by === "name"
      ? a.name.localeCompare(b.name)
      : Number(b[by]) - Number(a[by]) || a.name.localeCompare(b.name)
  );
}

export function topCommand(): Command {
  return withClientOptions(
    new Command("top").description("live table of VMs (or hosts) by CPU or memory use")
      .option("--nodes", "show hosts instead of VMs")
      .addOption(
        new Option("--sort <key>", "sort by").choices(["cpu", "mem", "name"]).default("cpu"),
      )
      .option("--once", "print once and exit (also when stdout is not a terminal)")
      .option("--interval <duration>", "time between refreshes, e.g. 2s", durationSeconds, 2),
  ).action(async (opts: TopOpts) => {
    const client = clientOf(opts);
    const live = !opts.once && opts.output !== "json" && Deno.stdout.isTerminal();
    for (;;) {
      const stats = await allStats(client);
      const rows = sortRows(opts.nodes ? hostRows(stats) : vmRows(stats), opts.sort);
      if (live) console.log("\x1b[H\x1b[2J" + new Date().toISOString());
      const json = opts.nodes
        ? { nodes: stats.map((s) => ({ node: s.node, ...s.current })) }
        : { vms: stats.flatMap((s) => s.vms.map((v) => ({ ...v, node: s.node }))) };
      render(opts.output, json, () =>
        printTable(
          rows,
          opts.nodes
            ? ["name", "cpu%", "mem", "disk", "pools", "load", "vms"]
            : ["name", "node", ...VM_COLUMNS],
        ));
      if (!live) return;
      await new Promise((r) => setTimeout(r, opts.interval * 1000));
    }
  });
}
