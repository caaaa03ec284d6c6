/**
 * State that grows: a 3-node cluster (simulated hosts, `--simulated-host`) filled with
 * `--vms` stopped VMs through the API, then:
 *
 * - `vm list`: the whole list (JSON, every VM) and one page of 500 (`?limit=500`), p50/p99
 *   over `--samples` requests each, from the leader;
 * - each node's RSS (its own `novactl_process_resident_memory_bytes`) after the fill, right
 *   after the lists and 15 s later (garbage collected, freed memory returned), and the
 *   leader's JavaScript heap;
 * - a 4th node joining afterwards: join → caught up with the leader's commit index, and
 *   whether it got there through a snapshot (its `novactl_raft_snapshot_chunks_total`);
 * - the leader's CPU (from /proc, % of one core) over `--idle` seconds with its hosts
 *   heart-beating and nothing else to do, at each count of `--idle-hosts`. Hosts beyond the
 *   4 node processes are simulated hosts that share a process (`novactl node simulate-hosts`:
 *   each a whole member with its own identity, Raft learner, listener and lease renewals), so
 *   200 of them fit this machine; the CPU those processes use meanwhile is printed beside.
 *   Then, at the same count, 100 creates one after another: the commit latency a user sees.
 *
 *   deno run -A bench/scale_bench.ts [--vms 10000] [--samples 100] [--idle 30]
 *                                    [--idle-hosts 4,100,200] [--out FILE]
 *
 * Goals (control-plane issue 10): full list p50 ≤ 150 ms, a page of 500 ≤ 20 ms, RSS ≤ 300 MiB,
 * leader CPU ≤ 25 % of a core with 200 simulated hosts.
 *
 * @module
 */
import { cpuSeconds } from "./lib/proc_cpu.ts";
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import { parseFlags, toPositiveInt } from "./lib/flags.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { runMeta } from "./lib/run_meta.ts";
import { defaultOut, installSignalTeardown, writeResult } from "./lib/systems.ts";
import { requestJson, waitFor } from "./lib/util.ts";
import { createVms, importTinyKernel, simulatedHostArgs } from "./lib/simulated.ts";

const SIMULATED = simulatedHostArgs(65_536, 1 << 30);
const CREATE_CLIENTS = 64;
const PAGE = 500;
/** Creates timed one after another at each count of hosts (commit latency under them). */
const CREATES_PER_POINT = 100;
/** How long after the lists the resident sets are read again. */
const SETTLE_MS = 15_000;

interface Options {
  vms: number;
  samples: number;
  idleS: number;
  idleHosts: number[];
  out: string;
}

function parseOptions(args: string[]): Options {
  const flags = parseFlags(args, new Set());
  return {
    vms: toPositiveInt("vms", flags.get("vms") ?? "10000"),
    samples: toPositiveInt("samples", flags.get("samples") ?? "100"),
    idleS: toPositiveInt("idle", flags.get("idle") ?? "30"),
    idleHosts: (flags.get("idle-hosts") ?? "4,100,200").split(",").map((v) =>
      toPositiveInt("idle-hosts", v)
    ).sort((a, b) => a - b),
    out: flags.get("out") ?? defaultOut("scale"),
  };
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { client: httpClient })).text();
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

let httpClient: Deno.HttpClient;

async function timedGets(
  url: string,
  token: string,
  n: number,
): Promise<{ ms: Figure; bytes: number }> {
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${token}` },
      client: httpClient,
    });
    const body = await res.arrayBuffer();
    times.push(performance.now() - t0);
    if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
    bytes = body.byteLength;
  }
  return { ms: figure(times, 2), bytes };
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  installSignalTeardown();
  const cluster = new NovactlCluster({ extraNodeArgs: SIMULATED });
  try {
    await cluster.start(3);
    const meta = await runMeta("scale", { dataDir: cluster.baseDir, runs: options.samples });
    httpClient = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(cluster.caFile)] });
    const token = cluster.adminToken;
    const leader = await cluster.leaderUrl();
    await importTinyKernel(cluster, "k");

    console.log(`-- filling: ${options.vms} stopped VMs, ${CREATE_CLIENTS} clients`);
    const fillStart = performance.now();
    await createVms(cluster, options.vms, CREATE_CLIENTS, (i) => ({
      name: `vm${i}`,
      image: "k",
      start: false,
      cpus: 1,
      memoryMiB: 64,
      labels: { n: String(i % 10) },
    }));
    const fillS = (performance.now() - fillStart) / 1000;
    console.log(
      `   ${options.vms} creates in ${fillS.toFixed(1)} s (${(options.vms / fillS).toFixed(0)}/s)`,
    );
    await waitFor(async () => {
      const r = await requestJson<{ vms: unknown[] }>(
        `${leader}/api/v1/vms?state=scheduled&limit=1`,
        { token },
      );
      return r.body!.vms.length === 0 || undefined;
    }, { timeoutMs: 300_000, description: "every host reported its VMs" });

    const rssAfterFill: Record<string, number> = {};
    for (const name of ["n1", "n2", "n3"]) {
      rssAfterFill[name] = await metric(
        cluster.node(name).url,
        "novactl_process_resident_memory_bytes",
      );
    }
    console.log(`-- vm list: ${options.samples} full lists, ${options.samples} pages of ${PAGE}`);
    const full = await timedGets(`${leader}/api/v1/vms`, token, options.samples);
    const page = await timedGets(`${leader}/api/v1/vms?limit=${PAGE}`, token, options.samples);
    console.log(
      `   full: p50 ${full.ms.median} ms (${
        (full.bytes / 2 ** 20).toFixed(1)
      } MiB); page: p50 ${page.ms.median} ms`,
    );
    const rssAfterLists: Record<string, number> = {};
    for (const name of ["n1", "n2", "n3"]) {
      rssAfterLists[name] = await metric(
        cluster.node(name).url,
        "novactl_process_resident_memory_bytes",
      );
    }
    // The leader's JavaScript heap at the same moment: how much of the peak is the heap.
    const leaderHeapRightAfter = {
      usedMiB: Math.round(await metric(leader, "novactl_process_heap_used_bytes") / 2 ** 20),
      totalMiB: Math.round(await metric(leader, "novactl_process_heap_total_bytes") / 2 ** 20),
      externalMiB: Math.round(
        await metric(leader, "novactl_process_external_memory_bytes") / 2 ** 20,
      ),
    };
    // Again once garbage could be collected and freed memory returned (core/memory: every 10 s).
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const rssSettled: Record<string, number> = {};
    for (const name of ["n1", "n2", "n3"]) {
      rssSettled[name] = await metric(
        cluster.node(name).url,
        "novactl_process_resident_memory_bytes",
      );
    }
    // How much of the leader's resident set is JavaScript heap (the rest: runtime, SQLite).
    const leaderHeap = {
      usedMiB: Math.round(await metric(leader, "novactl_process_heap_used_bytes") / 2 ** 20),
      totalMiB: Math.round(await metric(leader, "novactl_process_heap_total_bytes") / 2 ** 20),
    };

    console.log("-- a 4th node joins");
    const joinStart = performance.now();
    const n4 = await cluster.addNode({ name: "n4" }).catch(async (err) => {
      const log = await Deno.readTextFile(cluster.node("n4").logPath).catch(() => "");
      throw new Error(`${err}\n${log.split("\n").slice(-15).join("\n")}`);
    });
    const target = await metric(leader, "novactl_raft_commit_index");
    await waitFor(
      async () => (await metric(n4.url, "novactl_raft_applied_index")) >= target || undefined,
      {
        timeoutMs: 300_000,
        description: "n4 caught up",
      },
    );
    const joinS = (performance.now() - joinStart) / 1000;
    const snapshotChunks = await metric(n4.url, "novactl_raft_snapshot_chunks_total");
    console.log(
      `   caught up in ${joinS.toFixed(1)} s; snapshot chunks received: ${snapshotChunks}`,
    );

    const leaderName = await cluster.leaderName();
    const pid = await cluster.nodePid(leaderName);
    const idle: {
      hosts: number;
      cpuPctOfOneCore: number;
      simulatorsPctOfOneCore: number;
      createMs: Figure;
    }[] = [];
    const hostCount = () =>
      cluster.nodes.length +
      cluster.simulatedHostGroups.reduce((n, g) => n + g.names.length, 0);
    for (const hosts of options.idleHosts) {
      // Beyond the 4 node processes, the hosts are simulated in groups sharing a process.
      if (hostCount() < hosts) {
        const group = `s${cluster.simulatedHostGroups.length + 1}h`;
        console.log(`   ${hosts - hostCount()} simulated hosts join (${group}*, one process)`);
        const t0 = performance.now();
        await cluster.addSimulatedHosts(hosts - hostCount(), group, SIMULATED.slice(1));
        console.log(`   joined in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
      await new Promise((r) => setTimeout(r, 5_000)); // joins and promotions settle
      const simulators = cluster.simulatedHostGroups.map((g) => g.process!.pid);
      const simulatorsCpu = async () =>
        (await Promise.all(simulators.map(cpuSeconds))).reduce((a, b) => a + b, 0);
      const c0 = await cpuSeconds(pid);
      const s0 = await simulatorsCpu();
      await new Promise((r) => setTimeout(r, options.idleS * 1000));
      const pct = ((await cpuSeconds(pid)) - c0) / options.idleS * 100;
      const simPct = ((await simulatorsCpu()) - s0) / options.idleS * 100;
      console.log(
        `   leader ${leaderName}: ${pct.toFixed(1)} % of a core idle with ${hosts} hosts ` +
          `(the simulated hosts' processes: ${simPct.toFixed(0)} %)`,
      );
      // Commit latency on the user's path with this many hosts: creates one after another,
      // each replicated to every member (the learners too) before the API answers.
      const createMs: number[] = [];
      for (let i = 0; i < CREATES_PER_POINT; i++) {
        const t0 = performance.now();
        const r = await requestJson(`${leader}/api/v1/vms`, {
          body: { name: `h${hosts}-${i}`, image: "k", start: false, cpus: 1, memoryMiB: 64 },
          token,
          timeoutMs: 30_000,
        });
        createMs.push(performance.now() - t0);
        if (r.status !== 201) throw new Error(`create with ${hosts} hosts: ${r.status}`);
      }
      const creates = figure(createMs, 2);
      console.log(`   a create, one client: p50 ${creates.median} ms, p99 ${creates.p99} ms`);
      idle.push({
        hosts,
        cpuPctOfOneCore: Math.round(pct * 10) / 10,
        simulatorsPctOfOneCore: Math.round(simPct),
        createMs: creates,
      });
    }
    const fit = leastSquares(idle.map((p) => [p.hosts, p.cpuPctOfOneCore]));
    console.log(`   ${fit.slope.toFixed(3)} % of a core per host`);

    const mib = (b: number) => Math.round(b / 2 ** 20);
    await writeResult(options.out, {
      meta: { ...meta, date: new Date().toISOString() },
      setup: {
        nodes: 3,
        vms: options.vms,
        samples: options.samples,
        createClients: CREATE_CLIENTS,
      },
      fill: {
        seconds: Math.round(fillS * 10) / 10,
        createsPerSec: Math.round(options.vms / fillS),
      },
      list: {
        fullMs: full.ms,
        fullMiB: Math.round(full.bytes / 2 ** 20 * 10) / 10,
        page500Ms: page.ms,
      },
      rssMiB: {
        afterFill: Object.fromEntries(Object.entries(rssAfterFill).map(([k, v]) => [k, mib(v)])),
        afterLists: Object.fromEntries(Object.entries(rssAfterLists).map(([k, v]) => [k, mib(v)])),
        [`${SETTLE_MS / 1000}sAfterLists`]: Object.fromEntries(
          Object.entries(rssSettled).map(([k, v]) => [k, mib(v)]),
        ),
        leaderHeapRightAfterLists: leaderHeapRightAfter,
        leaderHeapSettled: leaderHeap,
      },
      join: { caughtUpSeconds: Math.round(joinS * 10) / 10, snapshotChunks },
      leaderIdle: {
        seconds: options.idleS,
        cpuPctOfOneCoreWithHosts: Object.fromEntries(
          idle.map((p) => [String(p.hosts), p.cpuPctOfOneCore]),
        ),
        simulatedHostProcessesPctOfOneCoreWithHosts: Object.fromEntries(
          idle.map((p) => [String(p.hosts), p.simulatorsPctOfOneCore]),
        ),
        createMsWithHosts: Object.fromEntries(idle.map((p) => [String(p.hosts), p.createMs])),
        pctPerHost: Math.round(fit.slope * 1000) / 1000,
        pctAtZeroHosts: Math.round(fit.intercept * 10) / 10,
      },
    });
  } finally {
    httpClient?.close();
    await cluster.stop();
  }
}

/** The least-squares line through `points` ([x, y] pairs); flat through one point. */
export function leastSquares(points: number[][]): { slope: number; intercept: number } {
  const n = points.length;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  const sxx = points.reduce((a, p) => a + (p[0] - mx) ** 2, 0);
  const sxy = points.reduce((a, p) => a + (p[0] - mx) * (p[1] - my), 0);
  const slope = sxx === 0 ? 0 : sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

if (import.meta.main) {
  try {
    await main();
    Deno.exit(0);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    Deno.exit(1);
  }
}
