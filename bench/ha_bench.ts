/**
 * HA benchmark: time from SIGKILL of a host (its node process and its QEMUs)
 * to its HA VM running on another host, over `--runs` kills.
 *
 *   deno run -A bench/ha_bench.ts [--runs 5]
 */
import { startGuestCluster } from "./lib/guest_cluster.ts";
import { percentile } from "./lib/stats.ts";

const runsArg = Deno.args.indexOf("--runs");
const RUNS = runsArg >= 0 ? Number(Deno.args[runsArg + 1]) : 5;

const g = await startGuestCluster(3);
const samples: number[] = [];
try {
  const leaseMs =
    (await g.api<{ config: Record<string, number> }>("GET", "/api/v1/config")).config["ha.leaseMs"];
  for (let i = 0; i < RUNS; i++) {
    // Kill a follower host: the leader is the one that detects and re-places.
    const status = await g.api<{ leader: string }>("GET", "/api/v1/cluster");
    const victim = ["n1", "n2", "n3"].find((n) => n !== status.leader)!;
    const name = `ha${i}`;
    await g.api("POST", "/api/v1/vms", {
      name,
      image: "guest",
      ha: true,
      node: victim,
      memoryMiB: 128,
    });
    await g.until(name, (v) => v.state === "running");
    await new Promise((r) => setTimeout(r, 1_500)); // a lease renewal or two in between
    const t0 = performance.now();
    await Promise.all([g.cluster.kill(victim), g.cluster.killQemus(victim)]);
    await g.until(name, (v) => v.node !== victim && v.state === "running", 60_000);
    const ms = performance.now() - t0;
    samples.push(ms);
    console.log(
      `run ${i + 1}: ${name} running elsewhere ${Math.round(ms)} ms after killing ${victim}`,
    );
    await g.cluster.restart(victim);
    await g.api("DELETE", `/api/v1/vms/${name}?force=true`);
    await new Promise((r) => setTimeout(r, 2_000));
  }
  const s = [...samples].sort((a, b) => a - b);
  const result = {
    date: new Date().toISOString(),
    runs: RUNS,
    leaseMs,
    killToRunningMs: {
      p50: Math.round(percentile(s, 50)),
      max: Math.round(s[s.length - 1]),
      all: samples.map(Math.round),
    },
  };
  console.log(JSON.stringify(result));
  await Deno.writeTextFile(
    new URL("./results/ha.json", import.meta.url).pathname,
    JSON.stringify(result, null, 2) + "\n",
  );
} finally {
  await g.stop();
}
