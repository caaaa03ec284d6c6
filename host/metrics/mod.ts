/**
 * Metrics of a host and of the VMs it runs (issue 13):
 *
 * - proc.ts: pure parsers of /proc and /sys counter files;
 * - collector.ts: readings of QEMU processes (/proc, QMP query-blockstats and query-balloon,
 *   tap counters) and of the host (/proc, the data directory's filesystem, storage pools),
 *   and the samples derived from two readings (samples.ts: rates, downsampling);
 * - history.ts: the host's own history in SQLite ring tables (10 s for 24 h, 5 min for 30 d);
 * - query.ts: the `since`/`step` window a history request asks for;
 * - prometheus.ts: the per-host and per-VM series in the node's /metrics;
 * - sampler.ts: the loop that ties them together, every 10 s.
 */
import { join } from "node:path";
import { fsStats } from "../storage/dir_pool.ts";
import type { VmHost } from "../vm_host.ts";
import type { HostSources, VmTarget } from "./collector.ts";
import { MetricsHistory } from "./history.ts";
import { DEFAULT_INTERVAL_MS, MetricsSampler } from "./sampler.ts";

export { MetricsHistory } from "./history.ts";
export { type Latest, MetricsSampler } from "./sampler.ts";
export { type HistoryWindow, historyWindow, STEPS } from "./query.ts";
export type { HostSample, VmSample } from "./samples.ts";

/** The history's file in the node's data directory. */
export const METRICS_DB_FILE = "metrics.db";

/** The QEMUs a VmHost runs as the sampler's targets (a migration's destination not yet). */
export function vmTargetsOf(host: VmHost): VmTarget[] {
  const out: VmTarget[] = [];
  for (const [name, rt] of host.runtimes) {
    if (rt.incoming) continue;
    out.push({
      name,
      pid: rt.qemu.pid,
      qmp: rt.qemu.qmp,
      taps: rt.qemu.spec.nics.flatMap((n) => n.tap ? [{ nic: n.id, tap: n.tap }] : []),
    });
  }
  return out;
}

/** The host's disk (its data directory's filesystem), pools and VM count. */
export function hostSourcesOf(host: VmHost, dataDir: string): HostSources {
  return {
    disk: () => fsStats(dataDir),
    pools: () => host.pools.usage(),
    vms: () => host.runningCount(),
  };
}

/** The sampler of a node's host, its history in DIR/metrics.db; start() it with the host. */
export function hostMetrics(
  host: VmHost,
  dataDir: string,
  intervalMs = intervalFromEnv(),
): MetricsSampler {
  return new MetricsSampler({
    history: new MetricsHistory(join(dataDir, METRICS_DB_FILE)),
    vms: () => vmTargetsOf(host),
    host: hostSourcesOf(host, dataDir),
    intervalMs,
  });
}

/**
 * `NOVACTL_METRICS_INTERVAL_MS`: a shorter interval for tests, which cannot wait 10 s per
 * sample. The rings keep their 10-second and 5-minute slots whatever it is.
 */
export function intervalFromEnv(): number {
  const v = Number(Deno.env.get("NOVACTL_METRICS_INTERVAL_MS"));
  return Number.isInteger(v) && v >= 100 ? v : DEFAULT_INTERVAL_MS;
}
