/**
 * HA benchmark: how long an HA VM takes to run on another host after its host fails, in three
 * modes, on a 3-node cluster with data dirs on disk (default /var/tmp) and the default
 * `ha.leaseMs`:
 *
 * - `hostDeath`: a follower host dies: its node process, its fencing watchdog and the VM's QEMU
 *   are SIGKILLed at once.
 * - `nodeProcessDeath`: only a follower's node process is SIGKILLed. The QEMU survives it; the
 *   host's watchdog must kill it once the lease is one second from running out unfed. Timed: kill
 *   → the old QEMU gone, and kill → running elsewhere.
 * - `leaderHostDeath`: the leader's own host dies (node, watchdog, QEMU): the survivors elect a
 *   leader, which counts every lease from its own term.
 *
 * Each sample is followed by its anchor, measured in the same run: what the raw mechanism needs,
 * with nothing of novactl's in between: the lease left at the kill (the host's own lease end,
 * read from its watchdog just before) or, for the leader's death, the time until a survivor
 * names a new leader plus a whole lease; plus the leader's safety margin (max(1 s, 10 %)); plus a
 * bare QEMU start of the same guest (spawn → QMP running, disk on the same filesystem).
 * `overheadMs` is the sample minus its anchor. Modes run in turn (host, node, leader, host, …),
 * `--reps` times each.
 *
 *   deno task bench:ha [--reps 3] [--dir /var/tmp]
 *
 * Writes bench/results/ha.json (`HaBenchResult`).
 */
import { type GuestCluster, startGuestCluster } from "./lib/guest_cluster.ts";
import { type Figure, figure } from "./lib/figures.ts";
import { timeBareStart } from "./lib/bare_qemu.ts";
import { isAlive, qemusOf } from "./lib/qemu_procs.ts";
import { type RunMeta, runMeta } from "./lib/run_meta.ts";
import { sleep, waitFor } from "./lib/util.ts";
import { WatchdogClient } from "../host/fencing/mod.ts";
import { bootTimeMs, FENCE_MARGIN_MS, safetyMarginMs } from "../core/cluster/lease.ts";

export type HaMode = "hostDeath" | "nodeProcessDeath" | "leaderHostDeath";

/** One mode's figures, each in ms over its `reps` samples. */
export interface HaModeResult {
  /** The table row's name, e.g. "host death (node, watchdog, QEMU)". */
  label: string;
  /** Kill → the VM `running` on another host, as the API reports it. */
  killToRunningElsewhereMs: Figure;
  /** Kill → the old QEMU gone (killed at once by the host's death; by the watchdog otherwise). */
  killToOldCopyGoneMs: Figure;
  /** Kill → the instant the watchdog must fence by (its `fenceAt`): the floor for the old copy. */
  fenceDeadlineMs: Figure;
  /** The raw mechanism, per sample (see the module doc). */
  anchorMs: Figure;
  /** `killToRunningElsewhereMs` minus the sample's anchor. */
  overheadMs: Figure;
  /** Samples in which the new copy ran while the old QEMU was still alive (must be 0). */
  overlaps: number;
}

/** What bench/results/ha.json holds. */
export interface HaBenchResult {
  meta: RunMeta;
  setup: {
    nodes: number;
    memoryMiB: number;
    reps: number;
    leaseMs: number;
    /** What the leader waits beyond the lease before it re-places: max(1 s, 10 % of the lease). */
    safetyMarginMs: number;
    order: "hostDeath, nodeProcessDeath, leaderHostDeath, each followed by its anchor";
  };
  modes: Record<HaMode, HaModeResult>;
}

function stringFlag(name: string, def: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : def;
}

const NODES = 3;
const MEMORY = 128;
const REPS = Number(stringFlag("reps", "3"));
const DIR = stringFlag("dir", "/var/tmp");
const OUT = stringFlag("out", new URL("./results/ha.json", import.meta.url).pathname);
const MODES: HaMode[] = ["hostDeath", "nodeProcessDeath", "leaderHostDeath"];
const MODE_LABELS: Record<HaMode, string> = {
  hostDeath: "follower host death (node, watchdog, QEMU)",
  nodeProcessDeath: "node process death alone (QEMU fenced by the watchdog)",
  leaderHostDeath: "leader host death (node, watchdog, QEMU)",
};

interface Sample {
  runningElsewhereMs: number;
  oldCopyGoneMs: number;
  fenceDeadlineMs: number;
  /** The anchor's time before any QEMU can start (lease left or election + lease, plus margin). */
  mechanismWaitMs: number;
  overlap: boolean;
}

interface VmView {
  name: string;
  uuid: string;
  node: string;
  state: string;
}

/** The host's own lease end as its watchdog knows it, relative to now (boot clock). */
async function leaseLeftMs(
  g: GuestCluster,
  host: string,
): Promise<{ fenceIn: number; leaseLeft: number }> {
  const hello = await WatchdogClient.probe(g.cluster.node(host).dataDir);
  if (!hello) throw new Error(`${host} has no watchdog`);
  const fenceIn = hello.fenceAt - bootTimeMs();
  return { fenceIn, leaseLeft: fenceIn + FENCE_MARGIN_MS };
}

/** Waits until a node other than `dead` answers with a leader other than `dead`. */
async function newLeaderSeen(g: GuestCluster, dead: string): Promise<void> {
  const survivors = g.cluster.nodes.filter((n) => n.name !== dead).map((n) => n.name);
  await waitFor(async () => {
    for (const name of survivors) {
      const status = await g.cluster.status(name).catch(() => null);
      if (status?.leader && status.leader !== dead) return true;
    }
    return undefined;
  }, { timeoutMs: 30_000, intervalMs: 20, description: "a new leader" });
}

/** A restarted host may run HA VMs again once it renewed its lease (its watchdog says so). */
async function backInService(g: GuestCluster, host: string): Promise<void> {
  await waitFor(async () => {
    const hello = await WatchdogClient.probe(g.cluster.node(host).dataDir);
    return hello !== null && hello.fenceAt > bootTimeMs() + 1_000 ? true : undefined;
  }, { timeoutMs: 60_000, description: `${host} holding its lease again` });
}

async function victimFor(g: GuestCluster, mode: HaMode): Promise<string> {
  const leader = await g.cluster.leaderName();
  if (mode === "leaderHostDeath") return leader;
  return g.cluster.nodes.map((n) => n.name).find((n) => n !== leader)!;
}

/** Creates an HA VM on `host` and returns it with its QEMU's pid. */
async function haVmOn(g: GuestCluster, name: string, host: string) {
  await g.api("POST", "/api/v1/vms", {
    name,
    image: "guest",
    ha: true,
    node: host,
    memoryMiB: MEMORY,
  });
  const vm = await g.until(name, (v) => v.state === "running") as unknown as VmView;
  const copies = await qemusOf(vm.uuid);
  if (copies.length !== 1 || copies[0].host !== host) {
    throw new Error(`${name}: expected one QEMU on ${host}, found ${JSON.stringify(copies)}`);
  }
  return { vm, pid: copies[0].pid };
}

/** Kills what `mode` says and times the old copy's end and the VM running elsewhere. */
async function failOnce(
  g: GuestCluster,
  mode: HaMode,
  name: string,
  leaseMs: number,
): Promise<Sample> {
  const victim = await victimFor(g, mode);
  const { pid } = await haVmOn(g, name, victim);
  await sleep(1_500); // a lease renewal or two in between
  const { fenceIn, leaseLeft } = await leaseLeftMs(g, victim);
  const t0 = performance.now();
  // Bounded beyond the wait for "running elsewhere" below, which fails first if fencing does.
  const gone = (async () => {
    while (isAlive(pid)) {
      if (performance.now() - t0 > 120_000) throw new Error(`${name}: old QEMU never died`);
      await sleep(10);
    }
    return performance.now() - t0;
  })();
  if (mode === "nodeProcessDeath") {
    await g.cluster.kill(victim, "SIGKILL");
  } else {
    Deno.kill(pid, "SIGKILL");
    await Promise.all([g.cluster.killWatchdog(victim), g.cluster.kill(victim, "SIGKILL")]);
  }
  const election = mode === "leaderHostDeath"
    ? newLeaderSeen(g, victim).then(() => performance.now() - t0)
    : Promise.resolve(0);
  await g.until(name, (v) => v.node !== victim && v.state === "running", 90_000);
  const runningElsewhereMs = performance.now() - t0;
  const overlap = isAlive(pid);
  const electionMs = await election;
  const oldCopyGoneMs = await gone;
  const margin = safetyMarginMs(leaseMs);
  const mechanismWaitMs = mode === "leaderHostDeath"
    ? electionMs + leaseMs + margin
    : Math.max(0, leaseLeft) + margin;
  await g.cluster.restart(victim);
  await backInService(g, victim);
  await g.api("DELETE", `/api/v1/vms/${name}?force=true`);
  await waitFor(
    async () =>
      (await g.api<{ vms: unknown[] }>("GET", "/api/v1/vms")).vms.length === 0 || undefined,
    { timeoutMs: 60_000, description: "no VMs left" },
  );
  return { runningElsewhereMs, oldCopyGoneMs, fenceDeadlineMs: fenceIn, mechanismWaitMs, overlap };
}

function modeResult(mode: HaMode, samples: Sample[], anchors: number[]): HaModeResult {
  return {
    label: MODE_LABELS[mode],
    killToRunningElsewhereMs: figure(samples.map((s) => s.runningElsewhereMs), 0),
    killToOldCopyGoneMs: figure(samples.map((s) => s.oldCopyGoneMs), 0),
    fenceDeadlineMs: figure(samples.map((s) => s.fenceDeadlineMs), 0),
    anchorMs: figure(anchors, 0),
    overheadMs: figure(samples.map((s, i) => s.runningElsewhereMs - anchors[i]), 0),
    overlaps: samples.filter((s) => s.overlap).length,
  };
}

const g = await startGuestCluster(NODES, { dir: DIR });
const work = await Deno.makeTempDir({ dir: g.base, prefix: "bare-" });
try {
  const meta0 = await runMeta("ha", { dataDir: g.base, runs: REPS });
  const leaseMs = (await g.api<{ config: Record<string, number> }>("GET", "/api/v1/config"))
    .config["ha.leaseMs"];
  await timeBareStart(work, "warmup", MEMORY);
  const samples = Object.fromEntries(MODES.map((m) => [m, [] as Sample[]])) as Record<
    HaMode,
    Sample[]
  >;
  const anchors = Object.fromEntries(MODES.map((m) => [m, [] as number[]])) as Record<
    HaMode,
    number[]
  >;
  for (let rep = 0; rep < REPS; rep++) {
    for (const mode of MODES) {
      const sample = await failOnce(g, mode, `ha-${rep}-${MODES.indexOf(mode)}`, leaseMs);
      const bareStartMs = await timeBareStart(work, `bare-${rep}-${mode}`, MEMORY);
      samples[mode].push(sample);
      anchors[mode].push(sample.mechanismWaitMs + bareStartMs);
      console.log(`rep ${rep + 1} ${mode}:`, JSON.stringify({ ...sample, bareStartMs }));
    }
  }
  const result: HaBenchResult = {
    meta: { ...meta0, date: new Date().toISOString() },
    setup: {
      nodes: NODES,
      memoryMiB: MEMORY,
      reps: REPS,
      leaseMs,
      safetyMarginMs: safetyMarginMs(leaseMs),
      order: "hostDeath, nodeProcessDeath, leaderHostDeath, each followed by its anchor",
    },
    modes: Object.fromEntries(
      MODES.map((m) => [m, modeResult(m, samples[m], anchors[m])]),
    ) as HaBenchResult["modes"],
  };
  console.log(JSON.stringify(result.modes, null, 2));
  await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${OUT}`);
} finally {
  await g.stop();
}
