/**
 * Consensus write benchmark: novactl's Raft vs. a 3-member etcd cluster, interleaved.
 *
 *   deno run -A bench/raft_bench.ts [--duration 10] [--warmup 1] [--clients 1,16,64]
 *                                   [--reps 3] [--value-bytes 256] [--keep] [--out FILE]
 *
 * Three clusters start once, as 3 local processes each on loopback with data dirs in one
 * temp dir, and stay up: novactl as shipped (HTTPS, signed peer requests), novactl with
 * `--insecure-http` (the same code over plain HTTP: what TLS costs), and etcd. For each client
 * count the same closed-loop load generator (bench/lib/loadgen.ts) drives novactl,
 * novactl-plain, etcd, novactl, … (`--reps` each), every durable write to the current leader. The result (bench/results/raft.json) holds each
 * repetition, the median and spread per system, and the ratio of the medians.
 */

import {
  closedLoopContender,
  type Contender,
  interleave,
  medianRatios,
  printRep,
  tlsCosts,
} from "./lib/comparison.ts";
import {
  clientList,
  nonNegativeNumber,
  parseFlags,
  positiveNumber,
  toPositiveInt,
} from "./lib/flags.ts";
import { payload } from "./lib/loadgen.ts";
import { runMeta } from "./lib/run_meta.ts";
import {
  base64,
  CLUSTER_SIZE,
  defaultOut,
  installSignalTeardown,
  PLAIN_SYSTEM,
  type RunningEtcd,
  type RunningNovactl,
  startEtcd,
  startNovactl,
  stopAll,
  writeResult,
} from "./lib/systems.ts";
import { sleep } from "./lib/util.ts";

interface BenchOptions {
  durationS: number;
  warmupS: number;
  clients: number[];
  reps: number;
  valueBytes: number;
  keep: boolean;
  outPath: string;
}

const CASE = "config write";
const PAUSE_BETWEEN_RUNS_MS = 1_000;

function parseOptions(args: string[]): BenchOptions {
  const flags = parseFlags(args, new Set(["keep"]));
  return {
    durationS: positiveNumber(flags, "duration", 10),
    warmupS: nonNegativeNumber(flags, "warmup", 1),
    clients: clientList(flags, "1,16,64"),
    reps: toPositiveInt("reps", flags.get("reps") ?? "3"),
    valueBytes: toPositiveInt("value-bytes", flags.get("value-bytes") ?? "256"),
    keep: flags.has("keep"),
    outPath: flags.get("out") ?? defaultOut("raft"),
  };
}

/** novactl: a new configuration version per write, committed through Raft and applied. */
function novactlWrites(
  novactl: RunningNovactl,
  options: BenchOptions,
  system = "novactl",
): Contender {
  const body = JSON.stringify({ value: payload(options.valueBytes) });
  return closedLoopContender(system, () => novactl.cluster.leaderUrl(), options, (leader) => ({
    url: `${leader}/api/v1/config/cluster.description`,
    method: "PUT",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${novactl.cluster.adminToken}`,
    },
    body,
  }));
}

/** etcd: `POST /v3/kv/put` (grpc-gateway JSON), one key per client. */
function etcdPuts(etcd: RunningEtcd, options: BenchOptions): Contender {
  const value = base64(payload(options.valueBytes));
  return closedLoopContender("etcd", () => etcd.cluster.leaderUrl(), options, (leader, client) => ({
    url: etcd.cluster.api(leader, "kv/put"),
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ key: base64(`bench/k${client}`), value }),
  }));
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const baseDir = await Deno.makeTempDir({ prefix: "raft-bench-" });
  installSignalTeardown();
  let failed = true;
  try {
    const meta = await runMeta("raft", { dataDir: baseDir, runs: options.reps });
    const novactl = await startNovactl(baseDir);
    const plain = await startNovactl(baseDir, { insecureHttp: true });
    const etcd = await startEtcd(baseDir);
    const contenders = [
      novactlWrites(novactl, options),
      novactlWrites(plain, options, PLAIN_SYSTEM),
      etcdPuts(etcd, options),
    ];
    const rows = [];
    for (const clients of options.clients) {
      rows.push(
        ...await interleave(contenders, {
          case: CASE,
          clients,
          reps: options.reps,
          onRun: (system, rep, result) => printRep(clients, system, rep, result),
          between: () => sleep(PAUSE_BETWEEN_RUNS_MS),
        }),
      );
    }
    const ratios = medianRatios(rows, "etcd");
    for (const r of ratios) console.log(`novactl/etcd at ${r.clients} clients: ${r.ratio}x`);
    const tlsCost = tlsCosts(rows, PLAIN_SYSTEM);
    for (const c of tlsCost) {
      console.log(`TLS cost at ${c.clients} clients: ${c.throughputPct} %, p50 +${c.p50Ms} ms`);
    }
    await writeResult(options.outPath, {
      meta: { ...meta, date: new Date().toISOString() },
      versions: { novactl: novactl.version, etcd: etcd.version },
      config: {
        clusterSize: CLUSTER_SIZE,
        durationS: options.durationS,
        warmupS: options.warmupS,
        clients: options.clients,
        valueBytes: options.valueBytes,
        target: "leader",
      },
      rows,
      ratios,
      tlsCost,
    });
    failed = false;
  } finally {
    await stopAll();
    if (failed || options.keep) console.error(`logs and data kept in ${baseDir}`);
    else await Deno.remove(baseDir, { recursive: true });
  }
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
