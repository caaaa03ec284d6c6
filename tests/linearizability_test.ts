/**
 * Linearizability of the versioned configuration on a real 3-process cluster whose
 * nodes each run in their own network namespace (bench/lib/netns.ts). A nemesis
 * (tests/lin/nemesis.ts) cuts links on the bridge with nftables, one way and both ways,
 * isolates the leader or a follower, sets bridge ports down, SIGKILLs and restarts
 * nodes and SIGSTOPs and continues them, leaders and followers alike. Clients send
 * reads, writes and compare-and-set on several keys to random nodes, so the requests
 * followers forward to the leader cross the cut links too. Every key's history is
 * checked on its own with the WGL checker (tests/lin/).
 *
 * Environment:
 * - LIN_DURATION_MS: keep injecting faults at least this long (default 0: one round of
 *   every fault kind, under a minute; with LIN_SOAK 600000);
 * - LIN_SOAK=1: after one round of every kind, random faults, sometimes two at once,
 *   and no planted-bug run (`deno task test:soak`, outside CI);
 * - LIN_SEED: reuse the random choices of a printed seed (which fault kinds in which
 *   order, victims, keys, targets); timing still differs from run to run.
 */
import { clusterFetch } from "../bench/lib/tls.ts";
import { NetworkLab } from "../bench/lib/netns.ts";
import { NovactlCluster } from "../bench/lib/novactl_cluster.ts";
import { sleep, waitFor } from "../bench/lib/util.ts";
import { assert } from "../core/testing/assert.ts";
import { DefiniteFailure, readKey, type Target, writeKey } from "./lin/config_client.ts";
import {
  configKeyModel,
  type ConfigValue,
  type KeyInput,
  type KeyOutput,
  type KeyState,
} from "./lin/config_key.ts";
import {
  FAULT_KINDS,
  type FaultKind,
  FAULTS,
  type InjectedFault,
  seededRandom,
} from "./lin/nemesis.ts";
import { type ErrorKind, HistoryRecorder } from "./lin/recorder.ts";
import { checkLinearizable, type Operation } from "./lin/wgl.ts";
import { MINUTE, testWithTimeout } from "./support/timeout.ts";

/**
 * The keys under test, each with how to make its n-th unique value. cluster.description
 * is the only free-form key; the numeric ones are read only by VM migration, VM restarts
 * and the (disabled) rebalancer, none of which a cluster without VMs does.
 */
const KEYS: Record<string, (n: number) => ConfigValue> = {
  "cluster.description": (n) => `d${n}`,
  "migration.timeoutMs": (n) => 10_000 + n,
  "rebalancer.cooldownMs": (n) => 10_000 + n,
  "vms.restartWindowMs": (n) => 10_000 + n,
};
const KEY_NAMES = Object.keys(KEYS);

const SOAK = Deno.env.get("LIN_SOAK") === "1";
const DURATION_MS = Number(Deno.env.get("LIN_DURATION_MS") ?? (SOAK ? 600_000 : 0));
const SEED = Number(Deno.env.get("LIN_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const CLIENTS = 10;
/** How long each fault stays in force, and the calm after undoing it. */
const FAULT_MS = 2_500;
const SETTLE_MS = 1_000;
const CHECK_TIMEOUT_MS = SOAK ? 600_000 : 120_000;

type History = Operation<KeyInput, KeyOutput>[];

/** What the nemesis publishes for the clients' statistics. */
interface Weather {
  leader: string | null;
  networkFault: boolean;
  done: boolean;
}

interface Stats {
  ops: number;
  /** Sent to a node other than the leader, so forwarded to it. */
  forwarded: number;
  /** Forwarded while a network fault was in force, and failed or timed out. */
  forwardedLost: number;
  casApplied: number;
}

interface WorkloadResult {
  histories: Map<string, History>;
  initial: Map<string, KeyState>;
  faults: { kind: FaultKind; what: string }[];
  stats: Stats;
}

/** Which faults to inject next (undefined: stop), given the rounds and time so far. */
type FaultPlan = (
  round: number,
  elapsedMs: number,
  random: () => number,
) => FaultKind[] | undefined;

/**
 * Every fault kind once, alone, in a seeded order; then random ones until DURATION_MS
 * is over, in a soak a third of the time two at once.
 */
function everyKindThenRandom(): FaultPlan {
  let order: FaultKind[] = [];
  return (round, elapsedMs, random) => {
    if (round === 0) order = shuffled(FAULT_KINDS, random);
    if (round < order.length) return [order[round]];
    if (elapsedMs >= DURATION_MS) return undefined;
    const first = pickOne(random, FAULT_KINDS);
    return SOAK && random() < 0.33 ? [first, pickOne(random, FAULT_KINDS)] : [first];
  };
}

testWithTimeout({
  name: "config reads, writes and CAS on several keys are linearizable under network and " +
    "process faults",
  timeoutMs: CHECK_TIMEOUT_MS + DURATION_MS + 15 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  console.log(`LIN_SEED=${SEED} (replay with this env var)${SOAK ? ", soak" : ""}`);
  const result = await withNamespacedCluster(
    {},
    (cluster, lab) => runWorkload(cluster, lab, everyKindThenRandom()),
  );
  const verdicts = checkEveryKey(result);
  const kinds = new Set(result.faults.map((f) => f.kind));
  assert(
    FAULT_KINDS.every((k) => kinds.has(k)),
    `every fault kind was injected (${[...kinds].join(", ")})`,
  );
  assert(result.stats.forwarded > 0, "clients' requests were forwarded");
  assert(result.stats.forwardedLost > 0, "forwarded requests crossed cut links");
  for (const key of KEY_NAMES) {
    const history = result.histories.get(key)!;
    assert(history.length > 50, `enough operations on ${key} (${history.length})`);
  }
  const bad = verdicts.filter((v) => !v.ok);
  assert(bad.length === 0, `not linearizable: ${bad.map((v) => v.key).join(", ")}`);
});

plantedBugTest(
  "a partitioned follower answers reads from its own replica",
  "replica",
  ["isolate follower", "isolate leader"],
);

testWithTimeout({
  name:
    "the checker catches a planted bug: a leader answers reads without ReadIndex, and is paused",
  ignore: SOAK,
  timeoutMs: 6 * MINUTE,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  // Directed, not random: the bug shows only when a read reaches the paused leader after a
  // write through its successor, and random clients line that up in some runs only.
  const caught = await withNamespacedCluster(
    { NOVACTL_TESTING_STALE_READS: "leader" },
    async (cluster) => {
      for (let round = 1; round <= PAUSE_ROUNDS; round++) {
        const verdict = await pausedLeaderRound(cluster, round);
        console.log(`paused-leader round ${round}: ${verdict.ok ? "linearizable" : "VIOLATION"}`);
        if (!verdict.ok) return true;
      }
      return false;
    },
  );
  assert(caught, `stale reads were reported as a violation within ${PAUSE_ROUNDS} rounds`);
});

const PAUSE_ROUNDS = 5;

/**
 * One directed round on a fresh key value: write through the leader L, SIGSTOP L, write
 * through its successor, send a read to L while it is stopped, SIGCONT L. A correct node
 * answers that read with the new value or not at all; the planted bug answers from L's
 * own state before it learns it was deposed.
 */
async function pausedLeaderRound(cluster: NovactlCluster, round: number) {
  const key = "cluster.description";
  const token = cluster.adminToken;
  const target = (name: string): Target => ({ url: cluster.node(name).url, token });
  const initial = await readKey(target(await cluster.leaderName()), key) as KeyState;
  const recorder = new HistoryRecorder<KeyInput, KeyOutput>();
  const classify = (input: KeyInput) => classifier(input);
  const old = await cluster.leaderName();
  const before = { type: "write", value: `p${round}-old` } as KeyInput;
  await recorder.record(
    0,
    before,
    () => writeKey(target(old), key, `p${round}-old`),
    classify(before),
  );
  await cluster.kill(old, "SIGSTOP");
  try {
    const others = cluster.nodes.map((n) => n.name).filter((n) => n !== old);
    const successor = await waitFor(async () => {
      for (const name of others) {
        const res = await clusterFetch(`${cluster.node(name).url}/api/v1/cluster`, {
          headers: { authorization: `Bearer ${token}` },
          signal: AbortSignal.timeout(1_000),
        }).catch(() => null);
        const body = res?.ok ? await res.json() : null;
        if (body?.leader && body.leader !== old) return body.leader as string;
      }
      return undefined;
    }, { timeoutMs: 30_000, description: `a leader other than the paused ${old}` });
    const after = { type: "write", value: `p${round}-new` } as KeyInput;
    const written = await recorder.record(
      1,
      after,
      () => writeKey(target(successor), key, `p${round}-new`),
      classify(after),
    );
    assert(written.status === "ok", `the successor ${successor} took the write`);
    const read = { type: "read" } as KeyInput;
    const pending = recorder.record(2, read, () => readKey(target(old), key), classify(read));
    await sleep(200); // the read waits in the stopped leader's socket
    await cluster.kill(old, "SIGCONT");
    await pending;
  } finally {
    await cluster.kill(old, "SIGCONT");
  }
  await cluster.leaderName(); // settled before the next round
  return checkLinearizable(configKeyModel(initial), recorder.history(), { timeoutMs: 10_000 });
}

/**
 * Runs the workload with a stale-read bug planted in the nodes (the test hook in
 * api/routes/config.ts) under the given faults, and expects the checker to report it.
 */
function plantedBugTest(bug: string, hook: "replica" | "leader", faults: FaultKind[]): void {
  testWithTimeout({
    name: `the checker catches a planted bug: ${bug}`,
    ignore: SOAK,
    timeoutMs: 10 * MINUTE,
    sanitizeOps: false,
    sanitizeResources: false,
  }, async () => {
    const result = await withNamespacedCluster(
      { NOVACTL_TESTING_STALE_READS: hook },
      (cluster, lab) => runWorkload(cluster, lab, (round) => faults[round] && [faults[round]]),
    );
    const verdicts = checkEveryKey(result);
    assert(verdicts.every((v) => !v.timedOut), "the checker reached a verdict on every key");
    assert(verdicts.some((v) => !v.ok), "stale reads were reported as a violation");
  });
}

async function withNamespacedCluster<T>(
  env: Record<string, string>,
  body: (cluster: NovactlCluster, lab: NetworkLab) => Promise<T>,
): Promise<T> {
  const swept = await NetworkLab.sweepStale();
  if (swept.length) console.log(`removed leftovers of crashed runs: ${swept.join(", ")}`);
  const lab = await NetworkLab.create();
  const cluster = new NovactlCluster({ network: lab, env, stopTimeoutMs: 2_000 });
  try {
    await cluster.start(3);
    return await body(cluster, lab);
  } catch (err) {
    console.error(`faults in force: ${lab.describeFaults().join(", ") || "none"}`);
    console.error(await cluster.describeLogs());
    throw err;
  } finally {
    await cluster.stop();
    await lab.destroy();
  }
}

async function runWorkload(
  cluster: NovactlCluster,
  lab: NetworkLab,
  plan: FaultPlan,
): Promise<WorkloadResult> {
  const token = cluster.adminToken;
  const initial = new Map<string, KeyState>();
  const leaderUrl = await cluster.leaderUrl();
  for (const key of KEY_NAMES) {
    initial.set(key, await readKey({ url: leaderUrl, token }, key) as KeyState);
  }
  const recorders = new Map(KEY_NAMES.map((k) => [k, new HistoryRecorder<KeyInput, KeyOutput>()]));
  const weather: Weather = { leader: await cluster.leaderName(), networkFault: false, done: false };
  const stats: Stats = { ops: 0, forwarded: 0, forwardedLost: 0, casApplied: 0 };
  const values = { next: 0 };

  const random = seededRandom(SEED + 1);
  const clients = Array.from(
    { length: CLIENTS },
    (_, id) => runClient(id, { cluster, token, random, recorders, weather, stats, values }),
  );
  const faults = await runNemesis(cluster, lab, plan, seededRandom(SEED), weather);
  await Promise.all(clients);

  // Healed: one more read of every key through the leader closes each history.
  const finalTarget = { url: await cluster.leaderUrl(), token };
  for (const [key, recorder] of recorders) {
    await recorder.record(99, { type: "read" }, () => readKey(finalTarget, key));
  }
  const histories = new Map([...recorders].map(([k, r]) => [k, r.history()]));
  console.log(
    `workload: ${stats.ops} ops from ${CLIENTS} clients on ${KEY_NAMES.length} keys; ` +
      `${stats.forwarded} sent to followers and forwarded, ${stats.forwardedLost} of them lost ` +
      `to network faults; ${stats.casApplied} CAS applied; ${faults.length} faults`,
  );
  return { histories, initial, faults, stats };
}

interface ClientEnv {
  cluster: NovactlCluster;
  token: string;
  random: () => number;
  recorders: Map<string, HistoryRecorder<KeyInput, KeyOutput>>;
  weather: Weather;
  stats: Stats;
  values: { next: number };
}

/** One client: random ops on random keys through random running nodes until the nemesis ends. */
async function runClient(id: number, env: ClientEnv): Promise<void> {
  let lastVersion = 0;
  while (!env.weather.done) {
    const key = pickOne(env.random, KEY_NAMES);
    const running = env.cluster.nodes.filter((n) => n.process && !n.process.exited);
    const node = pickOne(env.random, running);
    const target: Target = { url: node.url, token: env.token };
    const forwarded = node.name !== env.weather.leader;
    const duringNetworkFault = env.weather.networkFault;
    const { input, run } = chooseOperation(env, key, target, lastVersion);
    const res = await env.recorders.get(key)!.record(id, input, run, classifier(input));
    env.stats.ops++;
    if (forwarded) env.stats.forwarded++;
    if (res.status !== "ok") {
      if (forwarded && duringNetworkFault) env.stats.forwardedLost++;
      continue;
    }
    const version = (res.output as { version?: number }).version;
    if (version !== undefined) lastVersion = Math.max(lastVersion, version);
    if (input.type === "cas" && (res.output as { ok?: boolean }).ok) env.stats.casApplied++;
  }
}

function chooseOperation(env: ClientEnv, key: string, target: Target, lastVersion: number) {
  const r = env.random();
  if (r < 0.5) {
    return { input: { type: "read" } as KeyInput, run: () => readKey(target, key) };
  }
  const value = KEYS[key](env.values.next++);
  if (r < 0.8) {
    return { input: { type: "write", value } as KeyInput, run: () => writeKey(target, key, value) };
  }
  return {
    input: { type: "cas", expectVersion: lastVersion, value } as KeyInput,
    run: () => writeKey(target, key, value, lastVersion),
  };
}

/** A failed read changed nothing, so it can always be left out; a write may have happened. */
function classifier(input: KeyInput): (error: unknown) => ErrorKind {
  if (input.type === "read") return () => "definite";
  return (error) => error instanceof DefiniteFailure ? "definite" : "indefinite";
}

async function runNemesis(
  cluster: NovactlCluster,
  lab: NetworkLab,
  plan: FaultPlan,
  random: () => number,
  weather: Weather,
): Promise<{ kind: FaultKind; what: string }[]> {
  const done: { kind: FaultKind; what: string }[] = [];
  const startedAt = Date.now();
  try {
    for (let round = 0;; round++) {
      const kinds = plan(round, Date.now() - startedAt, random);
      if (!kinds) break;
      const leader = await agreedLeader(cluster);
      weather.leader = leader;
      const followers = cluster.nodes.map((n) => n.name).filter((n) => n !== leader);
      const injected: InjectedFault[] = [];
      for (const kind of kinds) {
        const fault = await FAULTS[kind]({ cluster, lab, leader, followers, random });
        injected.push(fault);
        done.push({ kind, what: fault.what });
        const at = ((Date.now() - startedAt) / 1000).toFixed(1);
        console.log(`  +${at}s ${kind}: ${fault.what}`);
      }
      weather.networkFault = injected.some((f) => f.network);
      await sleep(FAULT_MS);
      // Heal the network first: a node restarted behind a cut cannot become ready.
      const processFaults = injected.filter((f) => !f.network).reverse();
      for (const fault of [...injected.filter((f) => f.network), ...processFaults]) {
        await fault.undo();
      }
      weather.networkFault = false;
      await sleep(SETTLE_MS);
    }
  } finally {
    await lab.heal();
    weather.done = true;
  }
  return done;
}

/**
 * The leader every running node names, in one term (after a heal a node may still
 * name a deposed leader for a moment): faults aimed at "the leader" hit the leader.
 */
function agreedLeader(cluster: NovactlCluster): Promise<string> {
  return waitFor(async () => {
    const running = cluster.nodes.filter((n) => n.process && !n.process.exited);
    const statuses = await Promise.all(running.map((n) => cluster.status(n.name)));
    const leaders = new Set(statuses.map((s) => `${s.leader}@${s.term}`));
    return leaders.size === 1 && statuses[0].leader ? statuses[0].leader : undefined;
  }, { timeoutMs: 60_000, description: "all nodes agreeing on a leader" });
}

interface Verdict {
  key: string;
  ok: boolean;
  timedOut: boolean;
}

/** Checks each key's history on its own; prints a line per key and the first failure. */
function checkEveryKey(result: WorkloadResult): Verdict[] {
  let explained = false;
  return KEY_NAMES.map((key) => {
    const history = result.histories.get(key)!;
    const unknown = history.filter((op) => op.ret === Infinity).length;
    const t0 = performance.now();
    const model = configKeyModel(result.initial.get(key)!);
    const verdict = checkLinearizable(model, history, { timeoutMs: CHECK_TIMEOUT_MS });
    const outcome = verdict.ok ? "linearizable" : verdict.timedOut ? "TIMED OUT" : "VIOLATION";
    console.log(
      `  ${key}: ${history.length} ops (${unknown} indefinite), checked in ` +
        `${Math.round(performance.now() - t0)} ms: ${outcome}`,
    );
    if (!verdict.ok && !explained) console.log(verdict.failure?.explanation.slice(0, 4_000));
    explained ||= !verdict.ok;
    return { key, ok: verdict.ok, timedOut: verdict.timedOut ?? false };
  });
}

function pickOne<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
