/**
 * Side-by-side load runs of novactl and its anchor (etcd), interleaved in one
 * run: for each case and client count, novactl, anchor, novactl, anchor, … for
 * `reps` repetitions, so background load and thermal drift hit both alike. Each
 * row reports the median and spread over the repetitions, and each pair the
 * ratio of the medians. Shared by `bench:raft` and `bench:api`; rendered by
 * `deno task bench:report`.
 */

import { type Figure, figure, MIN_SAMPLES_FOR_P99, round } from "./figures.ts";
import { type LoadResult, runClosedLoop, type WriteRequest } from "./loadgen.ts";
import type { RunMeta } from "./run_meta.ts";

/** One repetition of one system at one client count. */
export interface RepResult {
  writesPerSec: number;
  p50Ms: number;
  /** null when the repetition had fewer than MIN_SAMPLES_FOR_P99 samples. */
  p99Ms: number | null;
  maxMs: number;
  samples: number;
  errors: number;
  errorSamples: string[];
}

/** A system at one client count of one case, over all its repetitions. */
export interface ComparisonRow {
  /** What is measured, e.g. "config write", "vm create". */
  case: string;
  clients: number;
  system: string;
  /** Throughput, per repetition. */
  writesPerSec: Figure;
  /** Each repetition's median latency. */
  p50Ms: Figure;
  /** Each repetition's p99 latency; null when any repetition had too few samples for one. */
  p99Ms: Figure | null;
  /** Each repetition's slowest request. */
  maxMs: Figure;
  errors: number;
  reps: RepResult[];
}

/** novactl's median throughput over the anchor's, for one case and client count. */
export interface ComparisonRatio {
  case: string;
  clients: number;
  anchor: string;
  ratio: number;
}

/** What `bench:raft` and `bench:api` write to `bench/results/*.json`. */
export interface ComparisonResult {
  meta: RunMeta;
  /** Version of every system in the run, e.g. `{ etcd: "3.4.23", novactl: "abc123" }`. */
  versions: Record<string, string>;
  config: Record<string, unknown>;
  rows: ComparisonRow[];
  ratios: ComparisonRatio[];
  /** Present when the run also drove novactl over plain HTTP. */
  tlsCost?: TlsCost[];
}

/** One system's load run for a case at a client count (the cluster stays up between calls). */
export interface Contender {
  system: string;
  run(clients: number, rep: number): Promise<LoadResult>;
}

export interface InterleaveOptions {
  case: string;
  clients: number;
  reps: number;
  /** Runs after every single load run (cleanup, a pause). */
  between?: (system: string, rep: number) => Promise<void>;
  /** Sees every run as it finishes (progress output). */
  onRun?: (system: string, rep: number, result: RepResult) => void;
}

/** Runs the contenders in turn, `reps` times over, and summarizes each one's repetitions. */
export async function interleave(
  contenders: readonly Contender[],
  options: InterleaveOptions,
): Promise<ComparisonRow[]> {
  const reps = new Map(contenders.map((c) => [c.system, [] as RepResult[]]));
  for (let rep = 0; rep < options.reps; rep++) {
    for (const contender of contenders) {
      const result = toRep(await contender.run(options.clients, rep));
      reps.get(contender.system)!.push(result);
      options.onRun?.(contender.system, rep, result);
      await options.between?.(contender.system, rep);
    }
  }
  return contenders.map((c) =>
    summarizeReps(options.case, options.clients, c.system, reps.get(c.system)!)
  );
}

export function toRep(result: LoadResult): RepResult {
  const { latency } = result;
  return {
    writesPerSec: round(result.writesPerSec, 1),
    p50Ms: round(latency.p50Ms, 3),
    p99Ms: latency.count >= MIN_SAMPLES_FOR_P99 ? round(latency.p99Ms, 3) : null,
    maxMs: round(latency.maxMs, 3),
    samples: latency.count,
    errors: result.errors,
    errorSamples: result.errorSamples,
  };
}

export function summarizeReps(
  caseName: string,
  clients: number,
  system: string,
  reps: RepResult[],
): ComparisonRow {
  const p99s = reps.map((r) => r.p99Ms);
  const finite = (values: number[]) => values.filter(Number.isFinite);
  return {
    case: caseName,
    clients,
    system,
    writesPerSec: figure(reps.map((r) => r.writesPerSec), 1),
    p50Ms: figureOrNaN(finite(reps.map((r) => r.p50Ms))),
    p99Ms: p99s.every((p) => p !== null) ? figure(p99s as number[]) : null,
    maxMs: figureOrNaN(finite(reps.map((r) => r.maxMs))),
    errors: reps.reduce((sum, r) => sum + r.errors, 0),
    reps,
  };
}

/** A repetition with no successful request has no latency: report NaN rather than fail. */
function figureOrNaN(values: number[]): Figure {
  return values.length ? figure(values) : { median: NaN, min: NaN, max: NaN, n: 0 };
}

/** Ratio of novactl's median throughput to the anchor's, for every case and client count. */
export function medianRatios(rows: readonly ComparisonRow[], anchor: string): ComparisonRatio[] {
  const ratios: ComparisonRatio[] = [];
  for (const row of rows.filter((r) => r.system === "novactl")) {
    const other = rows.find((r) =>
      r.system === anchor && r.case === row.case && r.clients === row.clients
    );
    if (other && other.writesPerSec.median > 0) {
      const ratio = round(row.writesPerSec.median / other.writesPerSec.median, 3);
      ratios.push({ case: row.case, clients: row.clients, anchor, ratio });
    }
  }
  return ratios;
}

/** What TLS costs novactl at one case and client count: HTTPS + mTLS next to plain HTTP. */
export interface TlsCost {
  case: string;
  clients: number;
  /** Throughput lost to TLS, in % of the plain-HTTP median (negative: TLS was faster). */
  throughputPct: number;
  /** Median p50 with TLS minus median p50 over plain HTTP, in ms. */
  p50Ms: number;
}

/** TLS cost for every case and client count that ran both `novactl` and `plainSystem`. */
export function tlsCosts(rows: readonly ComparisonRow[], plainSystem: string): TlsCost[] {
  const costs: TlsCost[] = [];
  for (const tls of rows.filter((r) => r.system === "novactl")) {
    const plain = rows.find((r) =>
      r.system === plainSystem && r.case === tls.case && r.clients === tls.clients
    );
    if (!plain || !(plain.writesPerSec.median > 0)) continue;
    costs.push({
      case: tls.case,
      clients: tls.clients,
      throughputPct: round((1 - tls.writesPerSec.median / plain.writesPerSec.median) * 100, 1),
      p50Ms: round(tls.p50Ms.median - plain.p50Ms.median, 2),
    });
  }
  return costs;
}

/** One progress line per load run. */
export function printRep(clients: number, system: string, rep: number, r: RepResult): void {
  const p99 = r.p99Ms === null ? `max ${r.maxMs.toFixed(2)}` : `p99 ${r.p99Ms.toFixed(2)}`;
  console.log(
    `   clients=${clients} rep ${rep + 1} ${system.padEnd(13)} ${r.writesPerSec.toFixed(1)}/s, ` +
      `p50 ${r.p50Ms.toFixed(2)} ms, ${p99} ms, errors ${r.errors}`,
  );
  for (const sample of r.errorSamples) console.log(`     error: ${sample}`);
}

/**
 * A contender that drives the current leader (`leaderUrl`, asked once per run) with the
 * closed-loop load generator: `clients` concurrent clients, each sending `requestFor(leader,
 * client)` and waiting for the answer, for `durationS` after `warmupS` — or until
 * `maxRequests()` (asked once per run) requests went out, for requests that use something up.
 */
export function closedLoopContender(
  system: string,
  leaderUrl: () => Promise<string>,
  timing: { durationS: number; warmupS: number },
  requestFor: (leader: string, client: number) => WriteRequest,
  maxRequests?: () => Promise<number>,
): Contender {
  return {
    system,
    run: async (clients) => {
      const leader = await leaderUrl();
      return await runClosedLoop({
        clients,
        durationMs: timing.durationS * 1000,
        warmupMs: timing.warmupS * 1000,
        requestFor: (client) => requestFor(leader, client),
        maxRequests: await maxRequests?.(),
      });
    },
  };
}
