/**
 * Scheduler benchmark: the placement path the leader runs, beside a reused index as anchor.
 *
 *   deno run -A bench/scheduler_bench.ts [--hosts 1000] [--vms 10000] [--decisions 20000]
 *                                        [--one-shot-decisions 50] [--reps 5] [--out FILE]
 *
 * Synthetic cluster state (hosts of mixed sizes with zone/rack/ssd labels, a
 * few cordoned, draining or offline; VMs with disks, a fifth of them in
 * placement groups), then a fixed mix of requests: plain, with label
 * constraints, and members of strict anti-affinity groups. Each repetition
 * times, in this order:
 *   1. the one-shot `place()` — what the leader runs for every create, HA
 *      restart, resize and migration (core/cluster/vm_service.ts, ha.ts): it
 *      builds a PlacementIndex from the whole state, then decides once;
 *   2. the anchor: one PlacementIndex reused across decisions (what a batch,
 *      e.g. a rebalancer plan, does; not the leader's per-request path);
 *   3. the same with every decision committed into the index;
 * plus the time to build the index. Not included: reading the state out of
 * SQLite (`fsm.vms()`, host views), which the leader does before each `place()`.
 * Results go to bench/results/scheduler.json. The state is seeded: runs compare.
 */
import { DEFAULT_CONFIG } from "../core/config/mod.ts";
import type { NodeRecord } from "../core/fsm/mod.ts";
import {
  type HostView,
  place,
  type PlacedVm,
  PlacementIndex,
  type PlacementRequest,
} from "../core/scheduler/mod.ts";
import { type Figure, figure } from "./lib/figures.ts";
import type { SchedulerPath, SchedulerResult } from "./lib/render.ts";
import { runMeta } from "./lib/run_meta.ts";

function flag(name: string, def: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  const value = i >= 0 ? Number(Deno.args[i + 1]) : def;
  if (!Number.isInteger(value) || value <= 0) {
    throw new Error(`--${name} must be a positive integer`);
  }
  return value;
}

const HOSTS = flag("hosts", 1000);
const VMS = flag("vms", 10000);
const DECISIONS = flag("decisions", 20000);
const ONE_SHOT_DECISIONS = flag("one-shot-decisions", 50);
const REPS = flag("reps", 5);
const BUILDS_PER_REP = 5;
const outArg = Deno.args.indexOf("--out");
const OUT = outArg >= 0
  ? Deno.args[outArg + 1]
  : new URL("./results/scheduler.json", import.meta.url).pathname;
const GiB = 2 ** 30;
const ZONES = ["z1", "z2", "z3", "z4"];

/** mulberry32: a seeded generator keeps the synthetic cluster identical between runs. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const random = seeded(42);
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];

function hostState(i: number): string {
  // 3% cordoned, 1% draining, 1% offline: enough to exercise the state filter.
  const slot = i % 100;
  return slot < 3 ? "cordoned" : slot < 4 ? "draining" : slot < 5 ? "offline" : "ready";
}

function syntheticHost(i: number): HostView {
  const name = `host${String(i).padStart(4, "0")}`;
  const node: NodeRecord = {
    name,
    url: `http://${name}:7070`,
    state: "ready",
    labels: {
      zone: ZONES[i % ZONES.length],
      rack: `r${String(Math.floor(i / 40)).padStart(2, "0")}`,
      ...(random() < 0.5 ? { ssd: "true" } : {}),
    },
    inventory: {
      cpus: pick([32, 48, 64, 96, 128]),
      memoryMiB: pick([128, 256, 384, 512]) * 1024,
      diskGiB: pick([2000, 4000, 8000]),
      diskFreeGiB: 1000,
      accel: "kvm",
      arch: "x86_64",
      kernel: "6.1",
      hostname: name,
      version: "0.1.0",
    },
    joinedAt: "",
    updatedAt: "",
  };
  const state = hostState(i);
  return { node, state, schedulable: state === "ready" };
}

interface SyntheticGroup {
  name: string;
  size: number;
}

/** VMs spread at random over ready hosts; a fifth belong to anti-affinity groups of 3 to 10. */
function syntheticVms(hosts: HostView[]): { vms: PlacedVm[]; groups: SyntheticGroup[] } {
  const ready = hosts.filter((h) => h.state === "ready").map((h) => h.node.name);
  const vms: PlacedVm[] = [];
  const groups: SyntheticGroup[] = [];
  while (vms.length < VMS) {
    const inGroup = random() < 0.2;
    const group = inGroup
      ? { name: `g${groups.length}`, size: 3 + Math.floor(random() * 8) }
      : null;
    if (group) groups.push(group);
    const members = group ? Math.min(group.size, VMS - vms.length) : 1;
    // Members of a group start on distinct hosts, as the strict rule would have put them.
    const start = Math.floor(random() * ready.length);
    for (let m = 0; m < members; m++) {
      vms.push({
        name: `vm${vms.length}`,
        node: group ? ready[(start + m * 7) % ready.length] : pick(ready),
        cpus: pick([1, 2, 4, 8]),
        memoryMiB: pick([1, 2, 4, 8, 16]) * 1024,
        desired: random() < 0.02 ? "deleted" : random() < 0.1 ? "stopped" : "running",
        disks: [{ sizeBytes: pick([10, 20, 50, 100, 200]) * GiB }],
        ...(group ? { group: group.name } : {}),
      });
    }
  }
  return { vms, groups };
}

type RequestKind = "plain" | "constraints" | "antiAffinity";

/** Half plain, a quarter with label constraints, a quarter joining a strict anti-affinity group. */
function requestMix(groups: SyntheticGroup[], count: number): [RequestKind, PlacementRequest][] {
  return Array.from({ length: count }, (_, i): [RequestKind, PlacementRequest] => {
    const base = {
      name: `new${i}`,
      cpus: pick([1, 2, 4]),
      memoryMiB: pick([1, 2, 4, 8]) * 1024,
      diskBytes: pick([10, 20, 50]) * GiB,
    };
    const slot = i % 4;
    if (slot < 2) return ["plain", base];
    if (slot === 2) {
      return ["constraints", {
        ...base,
        constraints: [
          { key: "zone", op: "=", value: pick(ZONES) },
          { key: "ssd", op: "=", value: "true" },
        ],
      }];
    }
    const group = pick(groups);
    return ["antiAffinity", {
      ...base,
      group: { name: group.name, policy: "anti-affinity", strict: true },
    }];
  });
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

function timeBuilds(hosts: HostView[], vms: PlacedVm[], runs: number): number[] {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    new PlacementIndex(hosts, vms, DEFAULT_CONFIG);
    times.push(performance.now() - t0);
  }
  return times;
}

interface Throughput {
  decisions: number;
  placed: number;
  seconds: number;
  decisionsPerSec: number;
}

function throughput(decisions: number, placed: number, ms: number): Throughput {
  return {
    decisions,
    placed,
    seconds: round(ms / 1000, 3),
    decisionsPerSec: Math.round(decisions / (ms / 1000)),
  };
}

/** Decisions against one index; with `commit`, each success is accounted as a batch would. */
function timeIndexed(
  index: PlacementIndex,
  requests: [RequestKind, PlacementRequest][],
  decisions: number,
  commit: boolean,
): Throughput {
  let placed = 0;
  const t0 = performance.now();
  for (let i = 0; i < decisions; i++) {
    const req = requests[i % requests.length][1];
    const r = index.place(req);
    if (!r.ok) continue;
    placed++;
    if (commit) index.commit(`${req.name}-${i}`, r.node, req);
  }
  return throughput(decisions, placed, performance.now() - t0);
}

function timeOneShot(
  hosts: HostView[],
  vms: PlacedVm[],
  requests: [RequestKind, PlacementRequest][],
  decisions: number,
): Throughput {
  let placed = 0;
  const t0 = performance.now();
  for (let i = 0; i < decisions; i++) {
    if (place(requests[i % requests.length][1], hosts, vms, DEFAULT_CONFIG).ok) placed++;
  }
  return throughput(decisions, placed, performance.now() - t0);
}

const hosts = Array.from({ length: HOSTS }, (_, i) => syntheticHost(i));
const { vms, groups } = syntheticVms(hosts);
const requests = requestMix(groups, 4000);
const meta = await runMeta("scheduler", { dataDir: Deno.cwd(), runs: REPS });

// Warm-up lets the JIT settle before anything is timed.
timeBuilds(hosts, vms, 5);
timeIndexed(new PlacementIndex(hosts, vms, DEFAULT_CONFIG), requests, 4000, false);
timeOneShot(hosts, vms, requests, 5);

const oneShot: number[] = [];
const reused: number[] = [];
const committed: number[] = [];
const buildMs: number[] = [];
for (let rep = 0; rep < REPS; rep++) {
  oneShot.push(timeOneShot(hosts, vms, requests, ONE_SHOT_DECISIONS).decisionsPerSec);
  const index = new PlacementIndex(hosts, vms, DEFAULT_CONFIG);
  reused.push(timeIndexed(index, requests, DECISIONS, false).decisionsPerSec);
  const fresh = new PlacementIndex(hosts, vms, DEFAULT_CONFIG);
  committed.push(timeIndexed(fresh, requests, DECISIONS, true).decisionsPerSec);
  buildMs.push(...timeBuilds(hosts, vms, BUILDS_PER_REP));
  console.log(
    `rep ${rep + 1}: one-shot place() ${oneShot[rep]}/s, reused index ${reused[rep]}/s, ` +
      `reused + commit ${committed[rep]}/s`,
  );
}

const path = (label: string, values: number[]): SchedulerPath => ({
  label,
  decisionsPerSec: figure(values, 0),
});
const indexBuildMs: Figure = figure(buildMs, 2);
const result: SchedulerResult & Record<string, unknown> = {
  meta: { ...meta, date: new Date().toISOString(), fsType: "in memory" },
  state: {
    hosts: HOSTS,
    readyHosts: hosts.filter((h) => h.state === "ready").length,
    vms: vms.length,
    groups: groups.length,
  },
  mix: { plain: 0.5, constraints: 0.25, strictAntiAffinity: 0.25 },
  goalDecisionsPerSec: 10000,
  decisionsPerRep: { oneShot: ONE_SHOT_DECISIONS, indexed: DECISIONS },
  paths: [
    path("**leader's path**: one-shot `place()`, index rebuilt per decision", oneShot),
    path("anchor: one index reused across decisions (not the leader's path)", reused),
    path("anchor: index reused, each decision committed into it", committed),
  ],
  indexBuildMs,
};

console.log(`state: ${HOSTS} hosts, ${vms.length} VMs, ${groups.length} groups`);
console.log(
  `index build: ${indexBuildMs.median} ms median (${indexBuildMs.min}-${indexBuildMs.max})`,
);
for (const p of result.paths) console.log(`${p.label}: ${JSON.stringify(p.decisionsPerSec)}`);
await Deno.writeTextFile(OUT, JSON.stringify(result, null, 2) + "\n");
console.log(`wrote ${OUT}; render BENCHMARKS.md with \`deno task bench:report\``);
