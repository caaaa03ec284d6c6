/**
 * Where a VM create's CPU goes: each process's CPU time per create, and its JavaScript
 * thread's, while the closed-loop load generator creates stopped VMs (bench:api's case (a))
 * on a 3-node cluster of simulated hosts.
 *
 *   deno run -A bench/create_cpu_bench.ts [--clients 64] [--duration 10] [--reps 3] [--out FILE]
 *
 * CPU times come from /proc/PID/stat (every thread) and /proc/PID/task/PID/stat (the first
 * thread), read before and after each repetition, for the three nodes and for this process
 * (the load generator). The result (bench/results/create_cpu.json) holds each repetition and
 * the median per process: with the machine's core count it says whether one thread or the
 * machine bounds bench:api's create figure.
 */
import { createBody, NovactlApi, SIMULATED_HOST_ARGS } from "./api_bench.ts";
import { parseFlags, positiveNumber, toPositiveInt } from "./lib/flags.ts";
import { type Figure, figure, round } from "./lib/figures.ts";
import { runClosedLoop } from "./lib/loadgen.ts";
import { cpuSeconds, machineCpuSeconds, mainThreadCpuSeconds } from "./lib/proc_cpu.ts";
import { runMeta } from "./lib/run_meta.ts";
import {
  defaultOut,
  installSignalTeardown,
  startNovactl,
  stopAll,
  writeResult,
} from "./lib/systems.ts";

interface Options {
  clients: number;
  durationS: number;
  reps: number;
  outPath: string;
}

/** One process's share of a repetition. */
interface ProcessCpu {
  pctOfOneCore: number;
  msPerCreate: number;
  /** Its JavaScript thread (absent for the load generator, whose thread is all of it). */
  mainThreadPctOfOneCore?: number;
  mainThreadMsPerCreate?: number;
}

interface Rep {
  /** The whole machine's busy share over the repetition (100 % = every core busy). */
  machineBusyPct: number;
  creates: number;
  createsPerSec: number;
  errors: number;
  processes: Record<string, ProcessCpu>;
}

function parseOptions(args: string[]): Options {
  const flags = parseFlags(args, new Set());
  return {
    clients: toPositiveInt("clients", flags.get("clients") ?? "64"),
    durationS: positiveNumber(flags, "duration", 10),
    reps: toPositiveInt("reps", flags.get("reps") ?? "3"),
    outPath: flags.get("out") ?? defaultOut("create_cpu"),
  };
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  installSignalTeardown();
  const baseDir = await Deno.makeTempDir({ prefix: "novactl-create-cpu-" });
  try {
    const novactl = await startNovactl(baseDir, { extraNodeArgs: SIMULATED_HOST_ARGS });
    const api = new NovactlApi(novactl);
    await api.importImage(baseDir);
    const cluster = novactl.cluster;
    const leaderName = await cluster.leaderName();
    const pids: Record<string, number> = {};
    for (const node of cluster.nodes) {
      pids[node.name === leaderName ? `${node.name} (leader)` : node.name] = await cluster
        .nodePid(node.name);
    }
    const leader = await cluster.leaderUrl();
    let seq = 0;
    const reps: Rep[] = [];
    for (let r = 0; r < options.reps; r++) {
      const before = await readAll(pids);
      const machineBefore = await machineCpuSeconds();
      const t0 = performance.now();
      const load = await runClosedLoop({
        clients: options.clients,
        durationMs: options.durationS * 1000,
        warmupMs: 0,
        requestFor: () => ({
          url: `${leader}/api/v1/vms`,
          method: "POST",
          headers: api.headers(),
          body: () => createBody(`cpu${r}-${seq++}`),
        }),
      });
      const wallS = (performance.now() - t0) / 1000;
      const after = await readAll(pids);
      const machineAfter = await machineCpuSeconds();
      const rep: Rep = {
        machineBusyPct: round(
          (machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total) *
            100,
          1,
        ),
        creates: load.writes,
        createsPerSec: Math.round(load.writesPerSec),
        errors: load.errors,
        processes: {},
      };
      for (const name of Object.keys(before)) {
        const used = after[name].all - before[name].all;
        const main = after[name].main - before[name].main;
        rep.processes[name] = {
          pctOfOneCore: round(used / wallS * 100, 1),
          msPerCreate: round(used * 1000 / load.writes, 3),
          ...(name === "load generator" ? {} : {
            mainThreadPctOfOneCore: round(main / wallS * 100, 1),
            mainThreadMsPerCreate: round(main * 1000 / load.writes, 3),
          }),
        };
      }
      reps.push(rep);
      print(`rep ${r + 1}`, rep);
    }
    const medians = summarize(reps);
    const result = {
      meta: await runMeta("create-cpu", { dataDir: baseDir, runs: options.reps }),
      setup: { nodes: 3, clients: options.clients, durationS: options.durationS },
      reps,
      medians,
    };
    await writeResult(options.outPath, result);
  } finally {
    await stopAll();
    await Deno.remove(baseDir, { recursive: true }).catch(() => {});
  }
}

async function readAll(
  pids: Record<string, number>,
): Promise<Record<string, { all: number; main: number }>> {
  const out: Record<string, { all: number; main: number }> = {};
  for (const [name, pid] of Object.entries(pids)) {
    out[name] = { all: await cpuSeconds(pid), main: await mainThreadCpuSeconds(pid) };
  }
  out["load generator"] = { all: await cpuSeconds(Deno.pid), main: 0 };
  return out;
}

function summarize(reps: Rep[]) {
  const names = Object.keys(reps[0].processes);
  const pick = (f: (r: Rep) => number | undefined): Figure | undefined => {
    const values = reps.map(f).filter((v): v is number => v !== undefined);
    return values.length ? figure(values) : undefined;
  };
  return {
    createsPerSec: pick((r) => r.createsPerSec),
    machineBusyPct: pick((r) => r.machineBusyPct),
    msPerCreateAll: pick((r) => totals(r).msPerCreate),
    pctOfOneCoreAll: pick((r) => totals(r).pctOfOneCore),
    processes: Object.fromEntries(names.map((n) => [n, {
      pctOfOneCore: pick((r) => r.processes[n].pctOfOneCore),
      msPerCreate: pick((r) => r.processes[n].msPerCreate),
      mainThreadPctOfOneCore: pick((r) => r.processes[n].mainThreadPctOfOneCore),
      mainThreadMsPerCreate: pick((r) => r.processes[n].mainThreadMsPerCreate),
    }])),
  };
}

function print(label: string, rep: Rep): void {
  console.log(`${label}: ${rep.createsPerSec} creates/s (${rep.creates}, errors ${rep.errors})`);
  for (const [name, p] of Object.entries(rep.processes)) {
    const thread = p.mainThreadMsPerCreate === undefined
      ? ""
      : `; JavaScript thread ${p.mainThreadPctOfOneCore} %, ${p.mainThreadMsPerCreate} ms`;
    console.log(
      `   ${name}: ${p.pctOfOneCore} % of a core, ${p.msPerCreate} ms per create${thread}`,
    );
  }
  const all = totals(rep);
  console.log(
    `   all: ${all.pctOfOneCore} % of a core (${navigator.hardwareConcurrency} cores), ${all.msPerCreate} ms per create; the machine ${rep.machineBusyPct} % busy`,
  );
}

/** All the processes of a repetition together. */
function totals(rep: Rep): { pctOfOneCore: number; msPerCreate: number } {
  const ps = Object.values(rep.processes);
  return {
    pctOfOneCore: round(ps.reduce((n, p) => n + p.pctOfOneCore, 0), 1),
    msPerCreate: round(ps.reduce((n, p) => n + p.msPerCreate, 0), 3),
  };
}

if (import.meta.main) {
  await main();
}
