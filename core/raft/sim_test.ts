/**
 * Deterministic simulation sweep over many seeds (see sim.ts).
 *
 *   deno test -A core/raft/sim_test.ts                  # the default sweep
 *   SIM_SEEDS=500 deno test -A core/raft/sim_test.ts    # a quicker one
 *   SIM_FIRST_SEED=100000 ...                           # explore other seeds
 *   SIM_WORKERS=1 ...                                   # worker threads (default: one per core)
 *   SIM_SEED=42 deno test -A core/raft/sim_test.ts      # replay one seed verbosely
 *   SIM_SEED=42 SIM_TRACE_FROM=300 ...                  # ... also printing messages from tick 300
 */
import { runSimulation, SimFailure } from "./sim.ts";
import type { WorkerReport } from "./sim_worker.ts";

/**
 * 175-220 seeds/s per core (each seed simulates ~350 ticks): 60-75 s where
 * only one core is usable, under 40 s with two workers on two real cores.
 */
const DEFAULT_SEEDS = 13_000;

const replaySeed = Deno.env.get("SIM_SEED");

function replayCommand(seed: number): string {
  return `SIM_SEED=${seed} deno test -A core/raft/sim_test.ts`;
}

if (replaySeed !== undefined) {
  Deno.test(`simulation: replay seed ${replaySeed}`, () => {
    const traceFrom = Deno.env.get("SIM_TRACE_FROM");
    const stats = runSimulation(Number(replaySeed), {
      verbose: true,
      traceMessagesFrom: traceFrom === undefined ? undefined : Number(traceFrom),
    });
    console.log(JSON.stringify(stats, null, 2));
  });
} else {
  Deno.test("simulation: random seeds keep every invariant and converge after healing", async () => {
    const count = Number(Deno.env.get("SIM_SEEDS") ?? DEFAULT_SEEDS);
    const first = Number(Deno.env.get("SIM_FIRST_SEED") ?? 1);
    const cores = navigator.hardwareConcurrency ?? 2;
    const workers = Math.max(1, Number(Deno.env.get("SIM_WORKERS") ?? Math.min(cores, 8)));
    const started = performance.now();
    const reports = await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const seeds: number[] = [];
        for (let s = first + w; s < first + count; s += workers) seeds.push(s);
        return runWorker(seeds);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const failures = reports.flatMap((r) => r.failures).sort((a, b) => a.seed - b.seed);
    const ran = reports.reduce((n, r) => n + r.ran, 0);
    const totals: Record<string, number> = {};
    for (const r of reports) {
      for (const [k, v] of Object.entries(r.totals)) totals[k] = (totals[k] ?? 0) + v;
    }
    console.log(
      `simulation: ${ran} seeds in ${seconds.toFixed(1)} s ` +
        `(${(ran / seconds).toFixed(0)} seeds/s on ${workers} workers); totals ${
          JSON.stringify(totals)
        }`,
    );
    if (failures.length) {
      const shown = failures.slice(0, 5).map((f) => {
        const detail = f.message.includes("replay:")
          ? f.message
          : `${f.message}\nreplay: ${replayCommand(f.seed)}`;
        return `--- seed ${f.seed}\n${detail}`;
      });
      throw new Error(
        `${failures.length} of ${ran} seeds failed (${
          failures.map((f) => f.seed).slice(0, 50).join(", ")
        })\n` +
          `replay the first with: ${replayCommand(failures[0].seed)}\n${shown.join("\n")}`,
      );
    }
    // Guard against a simulation that silently stopped exercising things.
    const sizes = new Set(reports.flatMap((r) => r.clusterSizes));
    if (count >= 200) {
      for (const size of [3, 5]) {
        if (!sizes.has(size)) throw new Error(`no ${size}-node cluster ran`);
      }
      for (
        const k of ["snapshotsInstalled", "confChanges", "transfers", "readsServed", "crashes"]
      ) {
        if (!totals[k]) throw new Error(`the sweep never exercised ${k}`);
      }
    }
  });

  Deno.test("simulation: a failing seed names its replay command", () => {
    const err = new SimFailure(7, "example", []);
    if (!err.message.includes(replayCommand(7))) throw new Error(err.message);
  });
}

function runWorker(seeds: number[]): Promise<WorkerReport> {
  const worker = new Worker(new URL("./sim_worker.ts", import.meta.url), { type: "module" });
  return new Promise<WorkerReport>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<WorkerReport>) => resolve(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`simulation worker crashed: ${e.message}`));
    };
    worker.postMessage({ seeds });
  }).finally(() => worker.terminate());
}
