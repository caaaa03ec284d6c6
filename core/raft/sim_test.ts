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
 *   SIM_PRODUCTION=1 SIM_SEED=42 ...                    # replay a seed of the production-loop sweep
 *   SIM_PRODUCTION_SEEDS=200 ...                        # a longer production-loop sweep (default 20)
 *
 * Every run sweeps a new range of seeds: the base seed is random unless
 * SIM_FIRST_SEED is set, and it is printed so a failing sweep can be rerun.
 * A seed alone determines its run (parameters, faults, workload), so the
 * replay command printed with a failure reproduces it exactly.
 */
import { drawParams, replayCommand, runSimulation, SimFailure } from "./sim.ts";
import { mulberry32 } from "./testing.ts";
import type { RaftMutation } from "./types.ts";
import type { WorkerReport } from "./sim_worker.ts";
import { MINUTE, testWithTimeout } from "../../tests/support/timeout.ts";

/**
 * About 10 ms of CPU per seed (each simulates ~350-800 ticks): some 25 s with
 * two workers on two idle cores, a minute or two on a loaded machine.
 * SIM_SEEDS=50000 makes a longer run.
 */
const DEFAULT_SEEDS = 5_000;

/** Each production-loop seed runs real SQLite logs on worker threads: 1-3 s apiece. */
const DEFAULT_PRODUCTION_SEEDS = 20;

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
  testWithTimeout(
    { name: `simulation: replay seed ${replaySeed}`, timeoutMs: 20 * MINUTE },
    async () => {
      const traceFrom = Deno.env.get("SIM_TRACE_FROM");
      const stats = await runSimulation(Number(replaySeed), {
        verbose: true,
        traceMessagesFrom: traceFrom === undefined ? undefined : Number(traceFrom),
        mutations: replayMutations,
        production: Deno.env.get("SIM_PRODUCTION") === "1",
      });
      console.log(JSON.stringify(stats, null, 2));
    },
  );
} else {
  testWithTimeout({
    name: "simulation: random seeds keep every invariant and converge after healing",
    timeoutMs: 20 * MINUTE,
  }, async () => {
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

  testWithTimeout({
    name: "simulation: a failing seed names its replay command",
    timeoutMs: 20 * MINUTE,
  }, () => {
    const err = new SimFailure(7, "example", []);
    if (!err.message.includes("SIM_SEED=7 deno test -A core/raft/sim_test.ts")) {
      throw new Error(err.message);
    }
    const planted = new SimFailure(7, "example", [], {
      mutations: ["multiConfChange"],
      production: true,
    });
    if (!planted.message.includes("SIM_MUTATIONS=multiConfChange SIM_PRODUCTION=1 SIM_SEED=7")) {
      throw new Error(planted.message);
    }
  });

  testWithTimeout({
    name: "simulation: the production Ready loop over SQLite logs keeps every invariant",
    timeoutMs: 20 * MINUTE,
  }, async () => {
    const count = Number(Deno.env.get("SIM_PRODUCTION_SEEDS") ?? DEFAULT_PRODUCTION_SEEDS);
    const first = baseSeed();
    const started = performance.now();
    const totals: Record<string, number> = {};
    for (let seed = first; seed < first + count; seed++) {
      try {
        const stats = await runSimulation(seed, { production: true });
        for (const [k, v] of Object.entries(stats)) {
          if (typeof v === "number" && k !== "seed") totals[k] = (totals[k] ?? 0) + v;
        }
      } catch (err) {
        if (err instanceof SimFailure) throw err; // names its replay command
        throw new Error(`${replayCommand(seed, { production: true })}: ${err}`, { cause: err });
      }
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `production loop: seeds ${first}..${first + count - 1} in ${seconds.toFixed(1)} s; ` +
        `totals ${JSON.stringify(totals)}`,
    );
    if (count >= 20) {
      for (const k of ["snapshotsInstalled", "crashes", "confChanges", "writesAcked"]) {
        if (!totals[k]) throw new Error(`the production sweep never exercised ${k}`);
      }
    }
  });

  for (const mutation of MUTATIONS) {
    testWithTimeout({
      name: `simulation: the checks notice the planted bug ${mutation}`,
      timeoutMs: 20 * MINUTE,
    }, async () => {
      const found = await findFailingSeed(mutation);
      console.log(`${mutation}: ${found.detail}`);
      if (found.seed === null) {
        throw new Error(`no seed noticed ${mutation}: ${found.detail}`);
      }
    });
  }
}

/**
 * Searches seeds 1, 2, ... (a fixed range, so this test does not flake), among
 * those whose drawn parameters make a membership storm (a filter on the seed's
 * parameters only, so the printed replay command reproduces the run), until
 * one fails with the planted bug. The same seed must pass without the bug, so
 * the failure is the mutation's doing; and it must break a safety invariant,
 * not merely fail to converge.
 */
async function findFailingSeed(
  mutation: RaftMutation,
  maxSeeds = 400,
  maxMs = 60_000,
): Promise<{ seed: number | null; detail: string }> {
  const started = performance.now();
  let seed = Number(Deno.env.get("SIM_MUTATION_FIRST_SEED") ?? 1);
  for (let tried = 0; tried < maxSeeds && performance.now() - started < maxMs; seed++) {
    if (!drawParams(mulberry32(seed)).membershipStorm) continue;
    tried++;
    try {
      await runSimulation(seed, { mutations: [mutation] });
      continue;
    } catch (err) {
      if (!(err instanceof SimFailure)) throw err;
      if (/no convergence/.test(err.message)) continue;
      await runSimulation(seed); // throws if the seed fails without the bug too
      const reason = err.message.split("\n")[0];
      const ms = Math.round(performance.now() - started);
      const replay = replayCommand(seed, { mutations: [mutation] });
      return { seed, detail: `${tried} storm seeds, ${ms} ms: ${reason}; ${replay}` };
    }
  }
  return { seed: null, detail: `none of the membership-storm seeds up to ${seed - 1} failed` };
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
