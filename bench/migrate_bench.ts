/**
 * Live migration benchmark for a 256 MiB guest: total time and downtime of
 * novactl migrations (disk on the shared pool; disk on the local pool, copied
 * over NBD) side by side with a bare QEMU→QEMU migration of the same guest
 * driven by hand over QMP (the anchor), in one run.
 *
 *   deno run -A bench/migrate_bench.ts [--runs 5]
 */
import { startGuestCluster } from "./lib/guest_cluster.ts";
import { percentile } from "./lib/stats.ts";
import type { QmpClient } from "../host/kvm/mod.ts";
import { launchBare, quitBare } from "./lib/bare_qemu.ts";
import { DirPool } from "../host/storage/mod.ts";
import { incomingOnFreePort } from "../host/kvm/migration.ts";

const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Number(Deno.args[runsArg + 1]) : 5;
const MEMORY = 256;
const DOWNTIME_LIMIT_MS = 50;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Sample {
  totalMs: number;
  downtimeMs: number;
  guestPausedMs?: number;
}

/**
 * The anchor: the same guest migrated back and forth between QEMU processes
 * by hand over QMP, each time into a fresh destination, like novactl does.
 */
class BareMigrations {
  private current: QmpClient | null = null;
  private n = 0;
  private disk = "";

  constructor(private readonly dir: string) {}

  private async launch(extra: string[]): Promise<QmpClient> {
    if (!this.disk) {
      const pool = await new DirPool(`${this.dir}/pool`).init();
      this.disk = (await pool.create("bare", 2 ** 30)).path;
    }
    return await launchBare(`${this.dir}/q${this.n++}`, {
      name: "bare",
      memoryMiB: MEMORY,
      disk: this.disk,
      extraArgs: extra,
    });
  }

  async start(): Promise<void> {
    this.current = await this.launch([]);
  }

  async migrateOnce(): Promise<Sample> {
    const src = this.current!;
    // The destination binds a port the kernel picks and reports it, as novactl's does.
    const dst = await this.launch(["-incoming", "defer"]);
    const port = await incomingOnFreePort(dst, "127.0.0.1");
    // The same parameters novactl sets (downtime limit, bandwidth cap far above loopback speed).
    await src.execute("migrate-set-parameters", {
      "downtime-limit": DOWNTIME_LIMIT_MS,
      "max-bandwidth": 10 * 2 ** 30,
    });
    await src.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
    let info: { status: string; "total-time"?: number; downtime?: number };
    do {
      await sleep(20);
      info = await src.execute("query-migrate");
    } while (info.status !== "completed" && info.status !== "failed");
    if (info.status !== "completed") throw new Error("bare migration failed");
    await quitBare(src);
    this.current = dst;
    return { totalMs: info["total-time"]!, downtimeMs: info.downtime! };
  }

  async stop(): Promise<void> {
    if (this.current) await quitBare(this.current);
  }
}

function summarize(xs: Sample[]) {
  const pick = (f: (s: Sample) => number | undefined) => {
    const v = xs.map(f).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
    return v.length
      ? { p50: Math.round(percentile(v, 50) * 10) / 10, max: Math.round(v[v.length - 1] * 10) / 10 }
      : null;
  };
  return {
    runs: xs.length,
    totalMs: pick((s) => s.totalMs),
    downtimeMs: pick((s) => s.downtimeMs),
    guestPausedMs: pick((s) => s.guestPausedMs),
  };
}

const g = await startGuestCluster(3);
const work = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "novactl-bare-" });
try {
  const results: Record<string, Sample[]> = { bare: [], shared: [], local: [] };
  const bare = new BareMigrations(work);
  await bare.start();
  for (const pool of ["shared", "local"] as const) {
    const name = `mig-${pool}`;
    await g.api("POST", "/api/v1/vms", {
      name,
      image: "guest",
      memoryMiB: MEMORY,
      node: "n1",
      pool: pool === "shared" ? "shared" : "dir",
    });
    await g.until(name, (v) => v.state === "running");
    await sleep(4_000);
  }
  for (let i = 0; i < RUNS; i++) {
    results.bare.push(await bare.migrateOnce());
    for (const pool of ["shared", "local"] as const) {
      const name = `mig-${pool}`;
      const op = await g.api<{ id: string }>("POST", `/api/v1/vms/${name}/migrate`, {});
      const done = await g.api<{ state: string; error: string; result: Record<string, number> }>(
        "GET",
        `/api/v1/operations/${op.id}/wait?timeoutMs=120000`,
      );
      if (done.state !== "succeeded") throw new Error(`${name}: ${done.error}`);
      results[pool].push({
        totalMs: done.result.totalMs,
        downtimeMs: done.result.qemuDowntimeMs,
        guestPausedMs: done.result.guestPausedMs,
      });
      await g.until(name, (v) => v.state === "running" && !v.migration);
    }
    console.log(
      `run ${i + 1}:`,
      JSON.stringify(Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.at(-1)]))),
    );
  }
  const summary = {
    date: new Date().toISOString(),
    memoryMiB: MEMORY,
    downtimeLimitMs: DOWNTIME_LIMIT_MS,
    bareQemu: summarize(results.bare),
    novactlSharedDisk: summarize(results.shared),
    novactlLocalDiskNbd: summarize(results.local),
  };
  console.log(JSON.stringify(summary, null, 2));
  await bare.stop();
  await Deno.writeTextFile(
    new URL("./results/migrate.json", import.meta.url).pathname,
    JSON.stringify(summary, null, 2) + "\n",
  );
} finally {
  await g.stop();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
