/**
 * The user's path through the REST API, next to etcd as the anchor, interleaved.
 *
 *   deno run -A bench/api_bench.ts [--duration 10] [--warmup 1] [--clients 1,16,64] [--reps 3]
 *                                  [--list-vms 100] [--keep] [--out FILE]
 *
 * Two fresh 3-node novactl clusters (as shipped, HTTPS with signed peer requests; and
 * `novactl-plain`, the same with `--insecure-http`, to show what TLS costs) and one 3-member
 * etcd start once and stay up. For each case and client count the closed-loop load generator
 * (bench/lib/loadgen.ts) drives novactl, novactl-plain, etcd, novactl, … (`--reps` each),
 * every request to the leader:
 *
 * - vm list: novactl `GET /api/v1/vms` over `--list-vms` stopped VMs; etcd a range read over
 *   as many keys holding values the size of one VM record (serializable, as novactl's list
 *   answers from the local replica).
 * - vm create: novactl `POST /api/v1/vms` with `start: false` (validated, placed by the
 *   scheduler, committed through Raft; no QEMU), a fresh name per request; etcd `POST
 *   /v3/kv/put` of a fresh key per request with a value the size of the create body. The VMs
 *   a repetition created are deleted before the next one, so every repetition places VMs on
 *   the same state. Stopped VMs hold their vCPUs, and 3 hosts of this machine's size hold
 *   3 × CPUs × 64 (the widest overcommit): a repetition stops when it has sent as many creates
 *   as there are free vCPUs, and its ops/s is taken over the time that took.
 * - vm create+delete: each client creates a stopped VM, then deletes it (`?force=true`), and
 *   so on; every request counts. etcd: the same puts as for creates.
 * - vm start/stop: client c starts, stops, starts … the seeded VM number c (`--list-vms` must
 *   be at least the largest client count); every request counts. etcd: the same puts.
 *
 * The novactl nodes run with `--simulated-host` (16,384 CPUs each, no QEMU): every node is
 * real (Raft, leases, the API, each host's reports through the leader); only the hypervisor
 * is simulated, so thousands of VMs fit and starts are reported as a converged host would.
 *
 * After every novactl run the bench checks through the API that no host holds more vCPUs
 * or memory than its capacity after overcommit and that no strict placement group is
 * broken, prints the outcome, records it (`placementChecks`) and fails when anything was.
 *
 * The result (bench/results/api.json) holds each repetition, the median and spread per system,
 * and the ratio of the medians.
 */

import {
  closedLoopContender,
  type ComparisonRow,
  type Contender,
  interleave,
  medianRatios,
  printRep,
  type RepResult,
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
import { requestJson, sleep, waitFor } from "./lib/util.ts";
import { simulatedHostArgs } from "./lib/simulated.ts";

interface BenchOptions {
  durationS: number;
  warmupS: number;
  clients: number[];
  reps: number;
  listVms: number;
  keep: boolean;
  outPath: string;
}

const IMAGE = "bench";
const CREATED_PREFIX = "c";
const PAIR_PREFIX = "p";
/**
 * The nodes' hosts are simulated (`--simulated-host`): a real node, Raft, leases and
 * reports, with this inventory and no QEMU. A stopped VM costs a real host nothing but its
 * report either; starts and stops are reported as a converged host would report them.
 */
export const SIMULATED_HOST_ARGS = simulatedHostArgs(16_384, 16 << 20);
const SEED_PREFIX = "seed";
const PAUSE_BETWEEN_RUNS_MS = 1_000;
const DELETE_PARALLELISM = 64;
/** Cleanup deletes answered 503 (no leader for a moment) are retried this often, 200 ms apart. */
const CLEANUP_ATTEMPTS_ON_503 = 50;
const CLEANUP_TIMEOUT_MS = 300_000;
/** Thousands of stopped VMs on 3 hosts of this size only fit with the widest overcommit. */
const WIDE_OVERCOMMIT = {
  "scheduler.overcommit.cpu": 64,
  "scheduler.overcommit.memory": 8,
  "scheduler.overcommit.disk": 64,
};

function parseOptions(args: string[]): BenchOptions {
  const flags = parseFlags(args, new Set(["keep"]));
  const options = {
    durationS: positiveNumber(flags, "duration", 10),
    warmupS: nonNegativeNumber(flags, "warmup", 1),
    clients: clientList(flags, "1,16,64"),
    reps: toPositiveInt("reps", flags.get("reps") ?? "3"),
    listVms: toPositiveInt("list-vms", flags.get("list-vms") ?? "100"),
    keep: flags.has("keep"),
    outPath: flags.get("out") ?? defaultOut("api"),
  };
  if (options.listVms < Math.max(...options.clients)) {
    throw new Error(
      `--list-vms ${options.listVms} is below ${Math.max(...options.clients)} clients: ` +
        "start/stop flips one seeded VM per client",
    );
  }
  return options;
}

// ---------------------------------------------------------------- novactl

export class NovactlApi {
  constructor(readonly novactl: RunningNovactl, readonly system = "novactl") {}

  get #token(): string {
    return this.novactl.cluster.adminToken;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${await this.novactl.cluster.leaderUrl()}${path}`;
    const { status, body: answer } = await requestJson<T>(url, {
      method,
      body,
      token: this.#token,
      timeoutMs: 30_000,
    });
    if (status < 200 || status > 299) {
      throw new Error(`${method} ${path} → ${status}: ${JSON.stringify(answer)}`);
    }
    return answer as T;
  }

  headers(): Record<string, string> {
    return { "content-type": "application/json", authorization: `Bearer ${this.#token}` };
  }

  /** A kernel "image" of random bytes: stopped VMs never boot it, creates only reference it. */
  async importImage(baseDir: string): Promise<void> {
    await this.call("PATCH", "/api/v1/config", {
      ...WIDE_OVERCOMMIT,
      "images.replicateToAllHosts": false,
    });
    const kernel = `${baseDir}/bench-kernel`;
    await Deno.writeFile(kernel, crypto.getRandomValues(new Uint8Array(64 * 1024)));
    const server = await this.novactl.cluster.leaderUrl();
    await this.novactl.cluster.cli([
      "image",
      "import",
      IMAGE,
      "--kernel",
      kernel,
      "--server",
      server,
      "--token",
      this.#token,
    ]);
  }

  /** vCPUs the scheduler can still place (every bench VM has 1), counted as it counts them. */
  async freeCpus(): Promise<number> {
    const { nodes } = await this.call<{ nodes: { inventory?: { cpus?: number } }[] }>(
      "GET",
      "/api/v1/nodes",
    );
    const capacity = nodes.reduce(
      (sum, node) =>
        sum + (node.inventory?.cpus ?? 0) * WIDE_OVERCOMMIT["scheduler.overcommit.cpu"],
      0,
    );
    return capacity - (await this.vmNames()).length;
  }

  /**
   * What the scheduler must never allow, checked from outside through the API: a host
   * holding more CPU or memory than its capacity after overcommit, or a strict group
   * broken. One line per finding; none is the expected answer.
   */
  async placementViolations(): Promise<string[]> {
    const { nodes } = await this.call<{ nodes: BenchHost[] }>("GET", "/api/v1/nodes");
    const { config } = await this.call<{ config: Record<string, number> }>("GET", "/api/v1/config");
    const { vms } = await this.call<{ vms: BenchVm[] }>("GET", "/api/v1/vms");
    const { groups } = await this.call<{ groups: BenchGroup[] }>("GET", "/api/v1/groups");
    return placementViolations(nodes, config, vms, groups);
  }

  async vmNames(): Promise<string[]> {
    const { vms } = await this.call<{ vms: { name: string }[] }>("GET", "/api/v1/vms");
    return vms.map((vm) => vm.name);
  }

  /**
   * Deletes every VM whose name starts with `prefix` and waits until they are gone. One
   * already being deleted may be gone by the time it is asked again (404): that is fine.
   */
  async deleteVms(prefix: string): Promise<void> {
    const { vms } = await this.call<{ vms: { name: string; desired: string }[] }>(
      "GET",
      "/api/v1/vms",
    );
    const names = vms.filter((vm) => vm.name.startsWith(prefix) && vm.desired !== "deleted")
      .map((vm) => vm.name);
    let next = 0;
    await Promise.all(Array.from({ length: DELETE_PARALLELISM }, async () => {
      for (let i = next++; i < names.length; i = next++) {
        for (let attempt = 1;; attempt++) {
          const url = `${await this.novactl.cluster.leaderUrl()}/api/v1/vms/${names[i]}?force=true`;
          const r = await requestJson(url, {
            method: "DELETE",
            token: this.#token,
            timeoutMs: 30_000,
          });
          if (r.status === 200 || r.status === 202 || r.status === 404) break;
          // A moment without a leader (seen once on a slow disk) is retried as a client would.
          if (r.status === 503 && attempt < CLEANUP_ATTEMPTS_ON_503) {
            console.log(`   DELETE ${names[i]} → 503 (attempt ${attempt}); retrying`);
            await sleep(200);
            continue;
          }
          throw new Error(`DELETE ${names[i]} → ${r.status}: ${JSON.stringify(r.body)}`);
        }
      }
    }));
    await waitFor(async () => {
      const left = (await this.vmNames()).filter((name) => name.startsWith(prefix));
      return left.length === 0 ? true : undefined;
    }, { timeoutMs: CLEANUP_TIMEOUT_MS, intervalMs: 500, description: `${prefix}* VMs deleted` });
  }
}

interface BenchHost {
  name: string;
  inventory?: { cpus: number; memoryMiB: number };
}
interface BenchVm {
  name: string;
  node: string | null;
  cpus: number;
  memoryMiB: number;
  desired: string;
  template?: boolean;
  group?: string;
}
interface BenchGroup {
  name: string;
  policy: "affinity" | "anti-affinity";
  strict: boolean;
}

/** See {@link NovactlApi.placementViolations}. Deleted VMs and templates hold no CPU or memory. */
export function placementViolations(
  hosts: BenchHost[],
  config: Record<string, number>,
  vms: BenchVm[],
  groups: BenchGroup[],
): string[] {
  const found: string[] = [];
  const holding = vms.filter((vm) => vm.node && vm.desired !== "deleted" && !vm.template);
  for (const host of hosts) {
    const here = holding.filter((vm) => vm.node === host.name);
    const cpus = here.reduce((sum, vm) => sum + vm.cpus, 0);
    const memory = here.reduce((sum, vm) => sum + vm.memoryMiB, 0);
    const capCpus = (host.inventory?.cpus ?? 0) * config["scheduler.overcommit.cpu"];
    const capMemory = (host.inventory?.memoryMiB ?? 0) * config["scheduler.overcommit.memory"];
    if (cpus > capCpus) found.push(`${host.name} holds ${cpus} vCPUs > ${capCpus}`);
    if (memory > capMemory) found.push(`${host.name} holds ${memory} MiB > ${capMemory} MiB`);
  }
  for (const group of groups.filter((g) => g.strict)) {
    const members = holding.filter((vm) => vm.group === group.name);
    const hostsUsed = new Set(members.map((vm) => vm.node));
    if (group.policy === "anti-affinity" && hostsUsed.size < members.length) {
      found.push(
        `anti-affinity group ${group.name}: ${members.length} VMs on ${hostsUsed.size} hosts`,
      );
    }
    if (group.policy === "affinity" && hostsUsed.size > 1) {
      found.push(`affinity group ${group.name}: spread over ${[...hostsUsed].join(", ")}`);
    }
  }
  return found;
}

/** The body of one stopped-VM create; `name` differs per request. */
export function createBody(name: string): string {
  return JSON.stringify({
    name,
    image: IMAGE,
    cpus: 1,
    memoryMiB: 16,
    diskGiB: 1,
    start: false,
  });
}

async function seedVms(api: NovactlApi, count: number): Promise<number> {
  for (let i = 0; i < count; i++) {
    await api.call("POST", "/api/v1/vms", JSON.parse(createBody(`${SEED_PREFIX}${i}`)));
  }
  const vm = await api.call<unknown>("GET", `/api/v1/vms/${SEED_PREFIX}0`);
  return JSON.stringify(vm).length;
}

function novactlList(api: NovactlApi, options: BenchOptions): Contender {
  return closedLoopContender(
    api.system,
    () => api.novactl.cluster.leaderUrl(),
    options,
    (leader) => ({
      url: `${leader}/api/v1/vms`,
      method: "GET",
      headers: api.headers(),
    }),
  );
}

function novactlCreates(api: NovactlApi, options: BenchOptions, clients: number): Contender {
  return {
    system: api.system,
    run: (_, rep) =>
      closedLoopContender(
        api.system,
        () => api.novactl.cluster.leaderUrl(),
        options,
        (leader, c) => ({
          url: `${leader}/api/v1/vms`,
          method: "POST",
          headers: api.headers(),
          body: (seq) => createBody(`${CREATED_PREFIX}${clients}-r${rep}-w${c}-${seq}`),
        }),
        () => api.freeCpus(),
      ).run(clients, rep),
  };
}

/**
 * Create-then-delete pairs: each client creates a VM and then deletes what it created
 * (`?force=true`, as the VM is stopped and never started); every request counts.
 */
function novactlPairs(api: NovactlApi, options: BenchOptions, clients: number): Contender {
  return {
    system: api.system,
    run: (_, rep) =>
      closedLoopContender(
        api.system,
        () => api.novactl.cluster.leaderUrl(),
        options,
        (leader, c) => ({
          url: `${leader}/api/v1/vms`,
          method: "POST",
          headers: api.headers(),
          sequence: (seq) => {
            const name = `${PAIR_PREFIX}${clients}-r${rep}-w${c}-${seq >> 1}`;
            return seq % 2 === 0
              ? { url: `${leader}/api/v1/vms`, method: "POST", body: createBody(name) }
              : { url: `${leader}/api/v1/vms/${name}?force=true`, method: "DELETE" };
          },
        }),
      ).run(clients, rep),
  };
}

/**
 * Starts and stops: client c flips the seeded VM number c, start then stop then start …
 * (each a desired state committed through Raft; the simulated host reports it converged).
 */
function novactlStartStop(api: NovactlApi, options: BenchOptions): Contender {
  return closedLoopContender(
    api.system,
    () => api.novactl.cluster.leaderUrl(),
    options,
    (leader, c) => ({
      url: `${leader}/api/v1/vms`,
      method: "POST",
      headers: api.headers(),
      sequence: (seq) => ({
        url: `${leader}/api/v1/vms/${SEED_PREFIX}${c}/${seq % 2 === 0 ? "start" : "stop"}`,
        method: "POST",
      }),
    }),
  );
}

// ---------------------------------------------------------------- etcd

async function seedEtcd(etcd: RunningEtcd, count: number, valueBytes: number): Promise<void> {
  const leader = await etcd.cluster.leaderUrl();
  const value = base64(payload(valueBytes));
  for (let i = 0; i < count; i++) {
    await requestJson(etcd.cluster.api(leader, "kv/put"), {
      body: { key: base64(`vms/${SEED_PREFIX}${i}`), value },
    });
  }
}

function etcdList(etcd: RunningEtcd, options: BenchOptions): Contender {
  const body = JSON.stringify({
    key: base64("vms/"),
    range_end: base64("vms0"), // "0" follows "/": every key under vms/
    serializable: true,
  });
  return closedLoopContender("etcd", () => etcd.cluster.leaderUrl(), options, (leader) => ({
    url: etcd.cluster.api(leader, "kv/range"),
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
  }));
}

function etcdPuts(etcd: RunningEtcd, options: BenchOptions, clients: number): Contender {
  const value = base64(payload(createBody(`${CREATED_PREFIX}${clients}-r0-w0-0`).length));
  return {
    system: "etcd",
    run: (_, rep) =>
      closedLoopContender("etcd", () => etcd.cluster.leaderUrl(), options, (leader, c) => ({
        url: etcd.cluster.api(leader, "kv/put"),
        method: "POST",
        headers: { "content-type": "application/json" },
        body: (seq) => JSON.stringify({ key: base64(`new/${clients}-${rep}-${c}-${seq}`), value }),
      })).run(clients, rep),
  };
}

// ---------------------------------------------------------------- running

/** Fills `rows` and `checks` as the cases run, so what was measured survives a late failure. */
async function runCases(
  apis: NovactlApi[],
  etcd: RunningEtcd,
  options: BenchOptions,
  rows: ComparisonRow[],
  checks: PlacementCheck[],
): Promise<void> {
  /** One case at every client count: the contenders interleaved, `after` each run, a pause. */
  const runCase = async (
    title: string,
    name: string,
    contenders: (clients: number) => Contender[],
    after: (system: string) => Promise<void> = () => Promise.resolve(),
  ) => {
    for (const clients of options.clients) {
      console.log(`-- ${title}, ${clients} clients`);
      rows.push(
        ...await interleave(contenders(clients), {
          case: name,
          clients,
          reps: options.reps,
          onRun: (system: string, rep: number, r: RepResult) => printRep(clients, system, rep, r),
          between: async (system) => {
            await after(system);
            await sleep(PAUSE_BETWEEN_RUNS_MS);
          },
        }),
      );
    }
  };
  /**
   * After each novactl run: nothing over-committed, no strict group broken (printed, kept);
   * then the VMs named `prefix…` the run created are deleted.
   */
  const checked = (prefix: string | null) => async (system: string) => {
    const api = apis.find((a) => a.system === system);
    if (!api) return;
    const found = await api.placementViolations();
    checks.push({ system, violations: found });
    console.log(
      found.length
        ? `   CHECK FAILED (${system}): ${found.join("; ")}`
        : `   check (${system}): no host over-committed, no strict group broken`,
    );
    if (prefix) await api.deleteVms(prefix);
  };
  await runCase("vm list", `vm list (${options.listVms} VMs)`, () => [
    ...apis.map((api) => novactlList(api, options)),
    etcdList(etcd, options),
  ]);
  await runCase("vm create (start: false)", "vm create (stopped)", (clients) => [
    ...apis.map((api) => novactlCreates(api, options, clients)),
    etcdPuts(etcd, options, clients),
  ], checked(CREATED_PREFIX));
  await runCase("vm create+delete pairs", "vm create+delete", (clients) => [
    ...apis.map((api) => novactlPairs(api, options, clients)),
    etcdPuts(etcd, options, clients),
  ], checked(PAIR_PREFIX));
  await runCase("vm start/stop", "vm start/stop", (clients) => [
    ...apis.map((api) => novactlStartStop(api, options)),
    etcdPuts(etcd, options, clients),
  ], checked(null));
}

/** One check after a novactl run: what was found over-committed or broken (nothing, we hope). */
interface PlacementCheck {
  system: string;
  violations: string[];
}

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  const baseDir = await Deno.makeTempDir({ prefix: "api-bench-" });
  installSignalTeardown();
  let failed = true;
  try {
    const meta = await runMeta("api", { dataDir: baseDir, runs: options.reps });
    const novactl = await startNovactl(baseDir, { extraNodeArgs: SIMULATED_HOST_ARGS });
    const plain = await startNovactl(baseDir, {
      insecureHttp: true,
      extraNodeArgs: SIMULATED_HOST_ARGS,
    });
    const etcd = await startEtcd(baseDir);
    const apis = [new NovactlApi(novactl), new NovactlApi(plain, PLAIN_SYSTEM)];
    let recordBytes = 0;
    for (const api of apis) {
      await api.importImage(baseDir);
      recordBytes = await seedVms(api, options.listVms);
    }
    await seedEtcd(etcd, options.listVms, recordBytes);
    const rows: ComparisonRow[] = [];
    const checks: PlacementCheck[] = [];
    try {
      await runCases(apis, etcd, options, rows, checks);
    } catch (err) {
      // Half an hour of measurements must not go with one late error: kept beside the result.
      const partial = `${options.outPath.replace(/\.json$/, "")}.partial.json`;
      await writeResult(partial, { meta, error: String(err), rows, checks });
      console.error(`what was measured before the failure: ${partial}`);
      throw err;
    }
    const ratios = medianRatios(rows, "etcd");
    for (const r of ratios) console.log(`${r.case} at ${r.clients} clients: ${r.ratio}x etcd`);
    const tlsCost = tlsCosts(rows, PLAIN_SYSTEM);
    for (const c of tlsCost) {
      console.log(`TLS cost, ${c.case} at ${c.clients}: ${c.throughputPct} %, p50 +${c.p50Ms} ms`);
    }
    await writeResult(options.outPath, {
      meta: { ...meta, date: new Date().toISOString() },
      versions: { novactl: novactl.version, etcd: etcd.version },
      config: {
        clusterSize: CLUSTER_SIZE,
        durationS: options.durationS,
        warmupS: options.warmupS,
        clients: options.clients,
        listVms: options.listVms,
        vmRecordBytes: recordBytes,
        target: "leader",
      },
      rows,
      ratios,
      tlsCost,
      placementChecks: {
        runs: checks.length,
        violations: checks.flatMap((c) => c.violations.map((v) => `${c.system}: ${v}`)),
      },
    });
    if (checks.some((c) => c.violations.length)) {
      throw new Error("a placement check failed: see CHECK FAILED above (results written)");
    }
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
