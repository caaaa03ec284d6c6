/**
 * Consensus write benchmark: novactl's Raft vs. a 3-member etcd cluster.
 *
 *   deno run -A bench/raft_bench.ts [--duration 10] [--warmup 1] [--clients 1,16,64]
 *                                   [--only novactl|etcd] [--value-bytes 256] [--keep]
 *
 * Both systems run as 3 local processes on loopback with data dirs in one temp dir,
 * and are driven by the same closed-loop load generator (bench/lib/loadgen.ts),
 * sending every durable write to the current leader.
 */

import { EtcdCluster } from "./lib/etcd.ts";
import { payload, runClosedLoop, type WriteRequest } from "./lib/loadgen.ts";
import { NovactlCluster } from "./lib/novactl_cluster.ts";
import {
  type BenchRow,
  formatConsoleTable,
  formatMarkdownTable,
  throughputRatios,
  toRow,
} from "./lib/report.ts";
import { runToCompletion } from "./lib/process.ts";
import { sleep } from "./lib/util.ts";

type SystemName = "etcd" | "novactl";

interface BenchOptions {
  durationS: number;
  warmupS: number;
  clients: number[];
  only?: SystemName;
  valueBytes: number;
  keep: boolean;
  outPath: string;
}

/** A system under test: a running 3-node cluster plus how to write to it. */
interface SystemUnderTest {
  name: SystemName;
  version: string;
  leaderUrl(): Promise<string>;
  requestFor(leaderUrl: string, client: number): WriteRequest;
  stop(): Promise<void>;
  describeLogs(): Promise<string>;
}

const CLUSTER_SIZE = 3;
/** Above this share of busy CPU (sampled before a cluster starts) results are likely noisy. */
const BUSY_CPU_FRACTION = 0.2;
const CPU_SAMPLE_MS = 1_000;
const PAUSE_BETWEEN_RUNS_MS = 1_000;
const DEFAULT_OUT = new URL("./results/raft.json", import.meta.url).pathname;

// ---------------------------------------------------------------- options

function parseOptions(args: string[]): BenchOptions {
  const flags = parseFlags(args);
  const only = flags.get("only");
  if (only !== undefined && only !== "etcd" && only !== "novactl") {
    throw new Error(`--only must be "etcd" or "novactl", got "${only}"`);
  }
  return {
    durationS: positiveNumber(flags, "duration", 10),
    warmupS: nonNegativeNumber(flags, "warmup", 1),
    clients: (flags.get("clients") ?? "1,16,64").split(",").map((c) => toPositiveInt("clients", c)),
    only,
    valueBytes: toPositiveInt("value-bytes", flags.get("value-bytes") ?? "256"),
    keep: flags.has("keep"),
    outPath: flags.get("out") ?? DEFAULT_OUT,
  };
}

const BOOLEAN_FLAGS = new Set(["keep"]);

/** Parses `--name value`, `--name=value` and boolean `--keep`. */
function parseFlags(args: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const match = args[i].match(/^--([\w-]+)(?:=(.*))?$/);
    if (!match) throw new Error(`unexpected argument "${args[i]}"`);
    const [, name, inline] = match;
    if (inline !== undefined || BOOLEAN_FLAGS.has(name)) flags.set(name, inline ?? "true");
    else if (i + 1 < args.length) flags.set(name, args[++i]);
    else throw new Error(`--${name} needs a value`);
  }
  return flags;
}

function positiveNumber(flags: Map<string, string>, name: string, fallback: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!(value > 0)) throw new Error(`--${name} must be a positive number`);
  return value;
}

function nonNegativeNumber(flags: Map<string, string>, name: string, fallback: number): number {
  const value = Number(flags.get(name) ?? fallback);
  if (!(value >= 0)) throw new Error(`--${name} must be a non-negative number`);
  return value;
}

function toPositiveInt(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`--${name}: "${text}" is not a positive integer`);
  }
  return value;
}

// ---------------------------------------------------------------- systems

async function startEtcd(baseDir: string, valueBytes: number): Promise<SystemUnderTest> {
  const cluster = new EtcdCluster({ baseDir: `${baseDir}/etcd` });
  activeStops.add(() => cluster.stop());
  await cluster.start(CLUSTER_SIZE);
  const encoder = new TextEncoder();
  const value = base64(encoder.encode(payload(valueBytes)));
  return {
    name: "etcd",
    version: await cluster.version(),
    leaderUrl: () => cluster.leaderUrl(),
    requestFor: (leaderUrl, client) => ({
      url: cluster.api(leaderUrl, "kv/put"),
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        key: base64(encoder.encode(`bench/k${client}`)),
        value,
      }),
    }),
    stop: () => cluster.stop(),
    describeLogs: () => cluster.describeLogs(),
  };
}

async function startNovactl(baseDir: string, valueBytes: number): Promise<SystemUnderTest> {
  const cluster = new NovactlCluster({ baseDir: `${baseDir}/novactl` });
  activeStops.add(() => cluster.stop());
  await cluster.start(CLUSTER_SIZE);
  const body = JSON.stringify({ value: payload(valueBytes) });
  return {
    name: "novactl",
    version: await novactlVersion(),
    leaderUrl: () => cluster.leaderUrl(),
    requestFor: (leaderUrl) => ({
      url: `${leaderUrl}/api/v1/config/cluster.description`,
      method: "PUT",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${cluster.adminToken}`,
      },
      body,
    }),
    stop: () => cluster.stop(),
    describeLogs: () => cluster.describeLogs(),
  };
}

/** Git commit of the novactl checkout under test, `-dirty` if it has local changes. */
async function novactlVersion(): Promise<string> {
  const repo = new URL("..", import.meta.url).pathname;
  try {
    const commit = (await runToCompletion("git", ["-C", repo, "rev-parse", "--short", "HEAD"]))
      .trim();
    const changes = await runToCompletion("git", ["-C", repo, "status", "--porcelain"]);
    return changes.trim() ? `${commit}-dirty` : commit;
  } catch {
    return "unknown";
  }
}

const STARTERS: Record<
  SystemName,
  (baseDir: string, valueBytes: number) => Promise<SystemUnderTest>
> = {
  etcd: startEtcd,
  novactl: startNovactl,
};

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

// ---------------------------------------------------------------- teardown

/** Stop functions of clusters that are (or may be) running, for signal-time cleanup. */
const activeStops = new Set<() => Promise<void>>();

async function stopAll(): Promise<void> {
  const stops = [...activeStops];
  activeStops.clear();
  await Promise.allSettled(stops.map((stop) => stop()));
}

function installSignalTeardown(): void {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      console.error(`\n${signal}: stopping clusters...`);
      stopAll().finally(() => Deno.exit(130));
    });
  }
}

// ---------------------------------------------------------------- running

interface SystemRun {
  version: string;
  /** Share of all CPUs busy with other work just before the cluster started. */
  cpuBusyBefore: number;
  rows: BenchRow[];
}

async function benchSystem(
  name: SystemName,
  options: BenchOptions,
  baseDir: string,
): Promise<SystemRun> {
  console.log(`\n== ${name}: starting ${CLUSTER_SIZE}-node cluster under ${baseDir}/${name}`);
  const cpuBusyBefore = await cpuBusyFraction(CPU_SAMPLE_MS);
  if (cpuBusyBefore > BUSY_CPU_FRACTION) {
    const percent = Math.round(cpuBusyBefore * 100);
    console.warn(`   warning: CPUs already ${percent}% busy with other work; results may be noisy`);
  }
  const started = Date.now();
  let system: SystemUnderTest | undefined;
  try {
    system = await STARTERS[name](baseDir, options.valueBytes);
    console.log(
      `   ready in ${((Date.now() - started) / 1000).toFixed(1)} s (version ${system.version})`,
    );
    const rows = await runAllClientCounts(system, options);
    return { version: system.version, cpuBusyBefore, rows };
  } catch (error) {
    if (system) console.error(await system.describeLogs());
    throw error;
  } finally {
    await stopAll();
  }
}

async function runAllClientCounts(
  system: SystemUnderTest,
  options: BenchOptions,
): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  for (const clients of options.clients) {
    const leader = await system.leaderUrl();
    const result = await runClosedLoop({
      clients,
      durationMs: options.durationS * 1000,
      warmupMs: options.warmupS * 1000,
      requestFor: (client) => system.requestFor(leader, client),
    });
    const row = toRow(system.name, result);
    printRunLine(row, leader);
    rows.push(row);
    await sleep(PAUSE_BETWEEN_RUNS_MS);
  }
  return rows;
}

function printRunLine(row: BenchRow, leader: string): void {
  console.log(
    `   ${row.system} clients=${row.clients} leader=${leader}: ${
      row.writesPerSec.toFixed(1)
    } writes/s, ` +
      `p50 ${row.p50Ms.toFixed(2)} ms, p99 ${row.p99Ms.toFixed(2)} ms, errors ${row.errors}`,
  );
  for (const sample of row.errorSamples) console.log(`     error: ${sample}`);
}

/** Busy share of all CPUs over `sampleMs`, from /proc/stat (NaN where unavailable). */
async function cpuBusyFraction(sampleMs: number): Promise<number> {
  const before = readCpuTimes();
  await sleep(sampleMs);
  const after = readCpuTimes();
  if (!before || !after || after.total === before.total) return NaN;
  const idle = after.idle - before.idle;
  return Math.round((1 - idle / (after.total - before.total)) * 1000) / 1000;
}

function readCpuTimes(): { idle: number; total: number } | undefined {
  try {
    const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1);
    const ticks = fields.map(Number);
    const idle = ticks[3] + (ticks[4] ?? 0); // idle + iowait
    return { idle, total: ticks.reduce((sum, tick) => sum + tick, 0) };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- output

function commandLine(): string {
  const main = new URL(Deno.mainModule).pathname;
  const cwd = Deno.cwd();
  const script = main.startsWith(`${cwd}/`) ? main.slice(cwd.length + 1) : main;
  return ["deno run -A", script, ...Deno.args].join(" ");
}

async function writeJson(
  options: BenchOptions,
  runs: Map<SystemName, SystemRun>,
  command: string,
): Promise<void> {
  const rows = allRows(runs);
  const document = {
    benchmark: "raft-write",
    timestamp: new Date().toISOString(),
    command,
    environment: {
      cpus: navigator.hardwareConcurrency,
      os: `${Deno.build.os} ${Deno.osRelease()}`,
      deno: Deno.version.deno,
      versions: Object.fromEntries([...runs].map(([name, run]) => [name, run.version])),
      cpuBusyBefore: Object.fromEntries(
        [...runs].map(([name, run]) => [name, run.cpuBusyBefore]),
      ),
    },
    config: {
      clusterSize: CLUSTER_SIZE,
      durationS: options.durationS,
      warmupS: options.warmupS,
      clients: options.clients,
      valueBytes: options.valueBytes,
      target: "leader",
    },
    results: rows,
    ratios: throughputRatios(rows),
  };
  await Deno.mkdir(new URL(".", `file://${options.outPath}`).pathname, { recursive: true });
  await Deno.writeTextFile(options.outPath, `${JSON.stringify(document, null, 2)}\n`);
}

function allRows(runs: Map<SystemName, SystemRun>): BenchRow[] {
  return [...runs.values()].flatMap((run) => run.rows);
}

async function report(options: BenchOptions, runs: Map<SystemName, SystemRun>): Promise<void> {
  const command = commandLine();
  const rows = allRows(runs);
  console.log(`\n${formatConsoleTable(rows)}`);
  await writeJson(options, runs, command);
  console.log(`\nJSON written to ${options.outPath}`);
  console.log("\nMarkdown (for BENCHMARKS.md):\n");
  console.log(`Command: \`${command}\`\n`);
  console.log(`${environmentSummary(options, runs)}\n`);
  console.log(formatMarkdownTable(rows));
}

/** One line describing the machine, versions and background load, for the markdown. */
function environmentSummary(options: BenchOptions, runs: Map<SystemName, SystemRun>): string {
  const systems = [...runs].map(([name, run]) =>
    `${name} ${run.version} (other CPU load before start: ${Math.round(run.cpuBusyBefore * 100)}%)`
  );
  return `${navigator.hardwareConcurrency} CPUs, ${Deno.build.os} ${Deno.osRelease()}, ` +
    `deno ${Deno.version.deno}; ${systems.join(", ")}; ${CLUSTER_SIZE} nodes on loopback, ` +
    `${options.valueBytes}-byte values, ${options.warmupS} s warm-up + ${options.durationS} s ` +
    `per client count, all writes to the leader.`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const systems: SystemName[] = options.only ? [options.only] : ["etcd", "novactl"];
  const baseDir = await Deno.makeTempDir({ prefix: "raft-bench-" });
  installSignalTeardown();
  let failed = true;
  try {
    const runs = new Map<SystemName, SystemRun>();
    for (const system of systems) runs.set(system, await benchSystem(system, options, baseDir));
    await report(options, runs);
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
