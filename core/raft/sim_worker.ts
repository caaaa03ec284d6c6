/// <reference lib="deno.worker" />
/**
 * Runs a share of the simulation seeds off the main thread (sim_test.ts
 * spreads seeds over one worker per core). Seeds are independent, so the
 * split does not change any seed's outcome.
 */
import { runSimulation } from "./sim.ts";

export interface WorkerRequest {
  seeds: number[];
}

export interface SeedFailure {
  seed: number;
  message: string;
}

export interface WorkerReport {
  failures: SeedFailure[];
  ran: number;
  totals: Record<string, number>;
  clusterSizes: number[];
}

self.onmessage = async (e: MessageEvent<WorkerRequest>) => {
  const report: WorkerReport = { failures: [], ran: 0, totals: {}, clusterSizes: [] };
  for (const seed of e.data.seeds) {
    try {
      const stats = await runSimulation(seed);
      for (const [k, v] of Object.entries(stats)) {
        if (typeof v === "number" && k !== "seed") report.totals[k] = (report.totals[k] ?? 0) + v;
      }
      if (!report.clusterSizes.includes(stats.params.voters)) {
        report.clusterSizes.push(stats.params.voters);
      }
    } catch (err) {
      const text = err instanceof Error ? `${err.message}\n${err.stack ?? ""}` : String(err);
      report.failures.push({ seed, message: text });
    }
    report.ran++;
  }
  self.postMessage(report);
};
