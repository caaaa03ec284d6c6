/**
 * Deterministic simulation sweep over many seeds (see sim.ts).
 *
 *   deno test -A core/raft/sim_test.ts                  # the default sweep, from a random base seed
 *   SIM_SEEDS=500 deno test -A core/raft/sim_test.ts    # a quicker one
 *   SIM_FIRST_SEED=100000 ...                           # rerun a sweep from its printed base seed
 *   SIM_WORKERS=1 ...                                   # worker threads (default: one per core)
 *   SIM_SEED=42 deno test -A core/raft/sim_test.ts      # replay one seed verbosely
 *   SIM_SEED=42 SIM_TRACE_FROM=300 ...                  # ... also printing messages from tick 300
 *   SIM_MUTATIONS=multiConfChange SIM_SEED=12 ...       # replay a seed with a planted bug
 *
 * Every run sweeps a new range of seeds: the base seed is random unless
 * SIM_FIRST_SEED is set, and it is printed so a failing sweep can be rerun.
 * A seed alone determines its run (parameters, faults, workload), so the
 * replay command printed with a failure reproduces it exactly.
 */
import { replayCommand, runSimulation, SimFailure } from "./sim.ts";
import type { RaftMutation } from "./types.ts";
import type { WorkerReport } from "./sim_worker.ts";

/**
 * 175-220 seeds/s per core (each seed simulates ~350 ticks): 60-75 s where
 * only one core is usable, under 40 s with two workers on two real cores.
 */
const DEFAULT_SEEDS = 13_000;

const MUTATIONS: RaftMutation[] = [
  "multiConfChange",
  "campaignWithPendingConf",
  "confChangeBeforeTermCommit",
];

const replaySeed = Deno.env.get("SIM_SEED");
const replayMutations = (Deno.env.get("SIM_MUTATIONS") ?? "").split(",").filter(
  Boolean,
) as RaftMutation[];

/** A fresh base seed per run (below 2^31, so every seed of the sweep is a plain integer). */
function baseSeed(): number {
  const fixed = Deno.env.get("SIM_FIRST_SEED");
  if (fixed !== undefined) return Number(fixed);
  return 1 + (crypto.getRandomValues(new Uint32Array(1))[0] % 2 ** 30);
}

if (replaySeed !== undefined) {
  Deno.test(`simulation: replay seed ${replaySeed}`, () => {
    const traceFrom = Deno.env.get("SIM_TRACE_FROM");
    const stats = runSimulation(Number(replaySeed), {
      verbose: true,
      traceMessagesFrom: traceFrom === undefined ? undefined : Number(traceFrom),
      mutations: replayMutations,
    });
    console.log(JSON.stringify(stats, null, 2));
  });
} else {
  Deno.test("simulation: random seeds keep every invariant and converge after healing", async () => {
    const count = Number(Deno.env.get("SIM_SEEDS") ?? DEFAULT_SEEDS);
    const first = baseSeed();
    console.log(
      `simulation: base seed ${first} (rerun this sweep: SIM_FIRST_SEED=${first} SIM_SEEDS=${count} ` +
        "deno test -A core/raft/sim_test.ts)",
    );
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
        const k of [
          "snapshotsInstalled",
          "confChanges",
          "confChangesRefused",
          "transfers",
          "readsServed",
          "crashes",
          "oneWayPartitions",
        ]
      ) {
        if (!totals[k]) throw new Error(`the sweep never exercised ${k}`);
      }
    }
  });

  Deno.test("simulation: a failing seed names its replay command", () => {
    const err = new SimFailure(7, "example", []);
    if (!err.message.includes("SIM_SEED=7 deno test -A core/raft/sim_test.ts")) {
      throw new Error(err.message);
    }
    const planted = new SimFailure(7, "example", [], ["multiConfChange"]);
    if (!planted.message.includes("SIM_MUTATIONS=multiConfChange SIM_SEED=7")) {
      throw new Error(planted.message);
    }
  });

  for (const mutation of MUTATIONS) {
    Deno.test(`simulation: the checks notice the planted bug ${mutation}`, () => {
      const found = findFailingSeed(mutation);
      console.log(`${mutation}: ${found.detail}`);
      if (found.seed === null) {
        throw new Error(`no seed noticed ${mutation}: ${found.detail}`);
      }
    });
  }
}

/**
 * Searches seeds 1, 2, ... (a fixed range, so this test does not flake) until
 * one fails with the planted bug; the same seed must pass without it, so the
 * failure is the mutation's doing. Liveness failures do not count: the bug
 * must show as a broken safety invariant.
 */
function findFailingSeed(
  mutation: RaftMutation,
  maxSeeds = 2000,
  maxMs = 30_000,
): { seed: number | null; detail: string } {
  const started = performance.now();
  let seed = Number(Deno.env.get("SIM_MUTATION_FIRST_SEED") ?? 1);
  for (let tried = 0; tried < maxSeeds && performance.now() - started < maxMs; tried++, seed++) {
    try {
      runSimulation(seed, { mutations: [mutation] });
      continue;
    } catch (err) {
      if (!(err instanceof SimFailure)) throw err;
      if (/no convergence/.test(err.message)) continue;
      runSimulation(seed); // throws if the seed fails without the bug too
      const reason = err.message.split("\n")[0];
      const ms = Math.round(performance.now() - started);
      return {
        seed,
        detail: `${tried + 1} seeds, ${ms} ms: ${reason}; ${replayCommand(seed, [mutation])}`,
      };
    }
  }
  return { seed: null, detail: `none of seeds up to ${seed - 1} failed` };
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
